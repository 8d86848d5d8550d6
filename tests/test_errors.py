"""Errors a person can act on: one or two lines on stderr naming the file and the fix, exit status 2, the traceback
only with --debug / MSDM_DEBUG=1; a local path is never mistaken for a hub id; progress bars and --quiet."""

import json

import numpy as np
import pytest
from PIL import Image

from msdm.cli import main
from msdm.hub import MissingWeightsError, looks_like_path, resolve


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error(err: str, *needles: str) -> str:
    # what is left on screen: a progress bar redraws its line with "\r" and a transient one clears it
    lines = [ln.split("\r")[-1] for ln in err.split("\n")]
    lines = [ln for ln in lines if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("msdm ") and ": error: " in ln]
    # the error is one or two lines at the end (what ran before it — a seed message, a loading bar — stays above)
    assert len(starts) == 1 and len(lines) - starts[0] <= 2 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# ---- paths and hub ids ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s, path", [
    ("openai/clip-vit-large-patch14", False), ("bert-base-uncased", False), ("org/name.v1-2_3", False),
    ("./weights", True), ("../x/y", True), ("~/models/clip", True), ("/abs/clip", True), ("runs/vae/last", True),
    ("vae.ckpt", True), ("captions.csv", True), ("my model/x", True), ("C:\\models\\x", True),
])
def test_looks_like_path(s, path):
    assert looks_like_path(s) is path


def test_a_path_whose_first_folder_exists_is_a_path(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert looks_like_path("runs/vea") and not looks_like_path("rnus/vea")
    with pytest.raises(MissingWeightsError, match="folder not found") as e:
        resolve("runs/vea", what="VAE")
    assert str(tmp_path / "runs" / "vea") in str(e.value) and "huggingface-cli" not in str(e.value)


def test_generate_local_path_vs_hub_id(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a polyp\n")
    missing = tmp_path / "exports" / "pipe"
    rc, _, err = run(capsys, "generate", "--pipeline", str(missing), "--prompts", str(prompts), "--out",
                     str(tmp_path / "o"))
    assert rc == 2
    one_error(err, "folder not found", str(missing), "MSDM pipeline")
    assert "huggingface-cli" not in err
    rc, _, err = run(capsys, "generate", "--pipeline", "someone/not-here", "--prompts", str(prompts), "--out",
                     str(tmp_path / "o"))
    assert rc == 2
    one_error(err, "huggingface-cli download someone/not-here", "not in the Hugging Face cache")
    rc, _, err = run(capsys, "generate", "--pipeline", "someone/not-here", "--prompts", str(tmp_path / "nope.txt"),
                     "--out", str(tmp_path / "o"))
    assert rc == 2
    one_error(err, "prompt file", "nope.txt", "does not exist")


def test_debug_and_msdm_debug_show_the_traceback(tmp_path, capsys, monkeypatch):
    from msdm.errors import PathNotFoundError

    argv = ["generate", "--pipeline", "x/y", "--prompts", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]
    with pytest.raises(PathNotFoundError):
        main([*argv, "--debug"])
    with pytest.raises(PathNotFoundError):
        main(["--debug", *argv])  # before the command too
    monkeypatch.setenv("MSDM_DEBUG", "1")
    with pytest.raises(PathNotFoundError):
        main(argv)


def test_export_of_a_missing_checkpoint(tmp_path, capsys):
    rc, _, err = run(capsys, "export", str(tmp_path / "last.ckpt"), "--out", str(tmp_path / "p"))
    assert rc == 2
    one_error(err, "checkpoint not found", "last.ckpt")


def test_fit_with_a_missing_vae_is_one_line(tmp_path, capsys, monkeypatch):
    """The Lightning path shares the mechanism: a config naming a VAE checkpoint that is not there."""
    from msdm.testing import repo_root

    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "fit", "-c", str(repo_root() / "configs" / "quickstart_unet.yaml"),
                     "--model.init_args.vae=runs/quickstart_vae/last.ckpt", "--trainer.fast_dev_run=true")
    assert rc == 2
    one_error(err, "msdm fit: error", "does not exist", str(tmp_path / "runs" / "quickstart_vae" / "last.ckpt"))


# ---- msdm evaluate inputs -------------------------------------------------------------------------------------------


@pytest.fixture
def eval_inputs(tmp_path, kvasir_dir):
    from msdm.metrics.testing import write_tiny_inception

    gen, real = tmp_path / "gen", tmp_path / "real"
    gen.mkdir()
    real.mkdir()
    files = sorted((kvasir_dir / "images").glob("*.jpg"))
    for p in range(1, 3):
        for i in range(1, 3):
            Image.open(files[2 * p + i]).convert("RGB").resize((32, 32)).save(gen / f"prompt{p:04d}_img{i:04d}.png")
    for f in files[10:14]:
        Image.open(f).convert("RGB").resize((32, 32)).save(real / f"{f.stem}.png")
    inception = write_tiny_inception(tmp_path / "inc.pt", feature_dim=8)
    return {"gen": gen, "real": real, "args": ["--real-images", str(real), "--fid-only", "--inception", str(inception),
                                               "--cache-dir", "none", "--output", str(tmp_path / "m.json")]}


def test_evaluate_fid_only_runs_without_biomedclip_or_mapping(eval_inputs, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, err = run(capsys, "evaluate", str(eval_inputs["gen"]), *eval_inputs["args"], "--quiet")
    assert rc == 0 and "FID" in out and err == ""
    res = json.loads((eval_inputs["gen"].parent / "m.json").read_text())
    assert set(res["scores"]) == {"FID"} and np.isfinite(res["scores"]["FID"]) and "biomedclip" not in res["extractors"]
    rc, _, err = run(capsys, "evaluate", str(eval_inputs["gen"]), *eval_inputs["args"])  # feature extraction bars
    assert rc == 0 and "inception features (generated)" in err and "inception features (real)" in err


def test_evaluate_fid_only_takes_any_folder_of_images(eval_inputs, tmp_path, capsys):
    """Two plain folders (no challenge names, other formats): the same FID as the same pixels in the layout."""
    plain = tmp_path / "plain"
    plain.mkdir()
    for k, f in enumerate(sorted(eval_inputs["gen"].glob("*.png"))):
        Image.open(f).save(plain / (f"frame {k}.png" if k % 2 else f"img_{k}.bmp"))  # lossless: the same pixels
    rc, out, err = run(capsys, "evaluate", str(eval_inputs["gen"]), *eval_inputs["args"], "--quiet")
    assert rc == 0, err
    want = json.loads((tmp_path / "m.json").read_text())["scores"]["FID"]
    rc, out, err = run(capsys, "evaluate", str(plain), *eval_inputs["args"], "--quiet")
    assert rc == 0 and "a plain folder" in out, err
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["num_images"] == 4 and res["scores"]["FID"] == pytest.approx(want, rel=1e-6)


def test_evaluate_input_errors_are_one_line(eval_inputs, tmp_path, capsys):
    gen = eval_inputs["gen"]
    bad = gen / "prompt0002_img0002.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # a corrupt PNG: named
    rc, _, err = run(capsys, "evaluate", str(gen), *eval_inputs["args"])
    assert rc == 2
    one_error(err, "prompt0002_img0002.png", "not a readable image")
    bad.unlink()
    (gen / "notes.png").write_bytes(b"")  # a .png outside the challenge layout: named
    rc, _, err = run(capsys, "evaluate", str(gen), *eval_inputs["args"])
    assert rc == 2
    one_error(err, "notes.png", "challenge layout")
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run(capsys, "evaluate", str(empty), *eval_inputs["args"])
    assert rc == 2
    one_error(err, "no .png images", str(empty))
    rc, _, err = run(capsys, "evaluate", str(tmp_path / "absent"), *eval_inputs["args"])
    assert rc == 2
    one_error(err, "generated images folder not found")
    rc, _, err = run(capsys, "evaluate", str(gen), "--real-images", str(eval_inputs["real"]))  # no mapping, no fid-only
    assert rc == 2
    one_error(err, "--real-mapping", "--fid-only")
    (tmp_path / "map.json").write_text("{not json")
    rc, _, err = run(capsys, "evaluate", str(gen), "--real-images", str(eval_inputs["real"]), "--real-mapping",
                     str(tmp_path / "map.json"))
    assert rc == 2
    one_error(err, "map.json", "JSON")


# ---- progress ------------------------------------------------------------------------------------------------------


def test_generate_shows_progress_unless_quiet(tmp_path, capsys, tiny_text_encoder):
    from msdm.testing import build_tiny_pipeline

    build_tiny_pipeline(tiny_text_encoder, resolution=16).save_pretrained(tmp_path / "pipe")
    (tmp_path / "p.txt").write_text("a polyp\nno polyp\n")
    argv = ["generate", "--pipeline", str(tmp_path / "pipe"), "--prompts", str(tmp_path / "p.txt"), "--num-images",
            "2", "--steps", "1", "--batch-size", "2"]
    rc, _, err = run(capsys, *argv, "--out", str(tmp_path / "a"))
    assert rc == 0 and "generate: 100%" in err and "4/4" in err
    rc, _, err = run(capsys, *argv, "--out", str(tmp_path / "b"), "--quiet")
    assert rc == 0 and "generate" not in err and "%|" not in err  # neither msdm's nor diffusers' loading bars
    # the images are the same either way
    a = sorted((tmp_path / "a").glob("*.png"))
    assert [np.asarray(Image.open(p)).tolist() for p in a] == [
        np.asarray(Image.open(tmp_path / "b" / p.name)).tolist() for p in a]


def test_progress_iterable_keeps_the_loader_interface(capsys):
    import torch

    from msdm.progress import ProgressIterable, enabled

    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=4)
    wrapped = ProgressIterable(loader, "cache train")
    assert len(wrapped) == 3 and wrapped.dataset is loader.dataset and wrapped.batch_size == 4
    assert [b.tolist() for b in wrapped] == [b.tolist() for b in loader]
    list(wrapped)
    err = capsys.readouterr().err
    assert "cache train: 100%" in err and "cache train (pass 2)" in err
    with enabled(False):
        list(wrapped)
    assert capsys.readouterr().err == ""
