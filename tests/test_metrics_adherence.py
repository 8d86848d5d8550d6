"""Prompt adherence: the shipped detector on held-out renders, the metric against hand counts, paired mode at its
two limits (perfect renders: gap 1; a generator that ignores the prompt: gap 0), the VAE agreement check, the
folder evaluation behind ``msdm evaluate --adherence``."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from msdm.metrics.adherence import (
    ATTRIBUTES,
    DEFAULT_PAIRS,
    AdherenceMetric,
    SceneDetector,
    adherence_report,
    detector_agreement,
    evaluate_adherence_folder,
    judge,
    paired_adherence,
    pipeline_generate_fn,
)
from msdm.synthetic import SyntheticGIDataset
from msdm.synthetic.polyp_detector import load_polyp_detector
from msdm.synthetic.prompt_facts import parse_prompt
from msdm.synthetic.prompt_scenes import ignoring_generate_fn, renders_generate_fn, scene_facts, scene_for
from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import sample_attributes
from msdm.synthetic.train_polyp_detector import head_accuracy, render_split, to_float


@pytest.fixture(scope="module")
def detector():
    return SceneDetector()


def _render(attrs, seed: int, size: int = 64) -> torch.Tensor:
    img, _ = render_scene(attrs, size, np.random.default_rng(seed))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


# ---------------------------------------------------------------------------------------------------------------------
# The shipped polyp detector
# ---------------------------------------------------------------------------------------------------------------------


def test_shipped_weights_load_small_and_record_their_training():
    det = load_polyp_detector()
    n_params = sum(p.numel() for p in det.net.parameters())
    assert n_params < 500_000  # float16 on disk: < 1 MB
    record = det.metadata
    assert record["command"].startswith("python -m msdm.metrics.train_polyp_detector")  # the old path still runs it
    assert set(record["test_accuracy"]) >= {"renders", "vae_reconstructions"}
    assert 0 < det.thresholds.polyp < 1


def test_held_out_split_renders_are_the_datasets_scenes():
    images, targets = render_split(3, "test")
    ds = SyntheticGIDataset(3, 64, 0, "test")
    for i in range(3):
        assert np.array_equal(images[i], ds.scene(i)[0])
        assert targets["count"][i] == ds.scene(i)[2]["num_polyps"]


def test_detector_accuracy_on_held_out_renders():
    """Scenes of the test split (never trained on), at 64 px and at 128 px (resized inside)."""
    det = load_polyp_detector()
    images, targets = render_split(160, "test")
    acc = head_accuracy(det.predict(to_float(images)), targets)
    assert acc["polyp"] >= 0.95 and acc["polyp_count"] >= 0.85 and acc["procedure"] >= 0.9, acc
    assert acc["instrument_kind"] >= 0.8 and acc["polyp_size"] >= 0.5 and acc["polyp_location_cells"] >= 0.85, acc
    big, big_targets = render_split(40, "test", size=128)
    acc_big = head_accuracy(det.predict(to_float(big)), big_targets)
    assert acc_big["polyp"] >= 0.9, acc_big


def test_detection_is_deterministic_and_input_types_agree(detector):
    attrs = scene_for("Generate an image with 2 polyps. Generate an image containing text.",
                      np.random.default_rng(3))
    x = _render(attrs, 3)
    pil = Image.fromarray((x.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
    a, b, c = detector.detect(x[None]), detector.detect(x[None]), detector.detect([pil])
    assert a == b == c
    assert a[0]["text"] is True and a[0]["polyp"] is True


# ---------------------------------------------------------------------------------------------------------------------
# judge / AdherenceMetric
# ---------------------------------------------------------------------------------------------------------------------


def test_judge_scores_only_what_the_prompt_says():
    seen = {"box": True, "text": False, "instrument": True, "instrument_kinds": ("tube",), "polyp": True,
            "polyp_count": 2, "polyp_sizes": ("5-10mm",), "polyp_locations": ("center",), "procedure": "colonoscopy"}
    assert judge(parse_prompt("Generate an image containing text."), seen) == {"text": False}
    assert judge(parse_prompt("Generate an image with 2 polyps."), seen) == {"polyp": True, "polyp_count": True}
    assert judge(parse_prompt("Generate an image containing polyp snareandtube."), seen) == {
        "instrument": True, "instrument_kind": False}  # exact set: a snare is missing
    assert judge(parse_prompt("Generate an image containing metal clip."), seen) == {"instrument": True}  # undrawable
    assert judge(parse_prompt("Generate an image with 5 polyps."), seen) == {"polyp": True}  # count > 3: not scored
    assert judge(parse_prompt("Generate an image containing the z-line."), seen) == {}


def test_metric_matches_a_hand_count_on_renders(detector):
    """Six perfect renders, each scored against a true and a false prompt: every accuracy is a known fraction."""
    prompts = [
        "Generate an image containing a green/black box artefact.",
        "Generate an image not containing a green/black box artefact.",
        "Generate an image containing text.",
        "Generate an image with 1 instrument.",
        "Generate an image with a polyp of size >20mm.",
        "Generate an image with no polyps.",
    ]
    images = torch.stack([_render(scene_for(p, np.random.default_rng(10 + i)), 10 + i) for i, p in enumerate(prompts)])
    m = AdherenceMetric(detector)
    m.update(images, prompts)  # all true
    wrong = ["Generate an image not containing a green/black box artefact.",
             "Generate an image containing a green/black box artefact.",
             "Generate an image not containing text.",
             "Generate an image with no instruments.",
             "Generate an image with no polyps.",
             "Generate an image containing a polyp."]
    m.update(images, wrong)  # all false
    res, counts = m.compute(), m.counts()
    # box: 4 scored (2 true + 2 false) -> 0.5; text 2 -> 0.5; instrument 2 -> 0.5; polyp 4 -> 0.5;
    # polyp_size 1 (true prompt only) -> 1.0; polyp_count 2 ("no polyps" sets count 0 twice: once true, once false)
    assert counts == {"box": 4, "text": 2, "instrument": 2, "instrument_kind": 0, "polyp": 4, "polyp_count": 2,
                      "polyp_size": 1, "polyp_location": 0, "procedure": 0, "prompts": 12, "unparsed": 0}
    for attr in ("box", "text", "instrument", "polyp", "polyp_count"):
        assert res[attr] == pytest.approx(0.5), attr
    assert res["polyp_size"] == pytest.approx(1.0)
    assert torch.isnan(res["procedure"]) and torch.isnan(res["instrument_kind"])
    assert res["mean"] == pytest.approx(np.mean([0.5] * 5 + [1.0]))


def test_metric_states_merge_like_ddp(detector):
    """Two processes' states summed (torchmetrics' merge_state, what DDP sync does) = one process over all."""
    gen = renders_generate_fn(64)
    prompts = ["Generate an image containing text.", "Generate an image with 2 polyps.",
               "Generate an image with no instruments.", "Generate an image from a gastroscopy procedure."] * 2
    images = gen(prompts, list(range(len(prompts))))
    wrong = [p.replace("containing text", "not containing text") for p in prompts]
    one = AdherenceMetric(detector)
    one.update(images, prompts)
    one.update(images, wrong)
    a, b = AdherenceMetric(detector), AdherenceMetric(detector)
    a.update(images[:3], prompts[:3])
    b.update(images[3:], prompts[3:])
    b.update(images, wrong)
    a.merge_state(b)
    ra, r1 = a.compute(), one.compute()
    for k in [*ATTRIBUTES, "mean"]:
        assert torch.equal(ra[k].isnan(), r1[k].isnan()) and (ra[k].isnan() or ra[k] == r1[k]), k
    assert a.counts() == one.counts()


# ---------------------------------------------------------------------------------------------------------------------
# Paired mode
# ---------------------------------------------------------------------------------------------------------------------


def test_paired_gap_is_one_for_perfect_renders_and_zero_for_a_prompt_blind_generator(detector):
    perfect = paired_adherence(renders_generate_fn(64), num_images=12, seed=0, detector=detector)
    for attr in ("box", "text", "instrument"):
        assert perfect[attr]["gap"] == 1.0, (attr, perfect[attr])
    assert perfect["polyp"]["gap"] >= 0.9 and perfect["mean_gap"] >= 0.97, perfect
    blind = paired_adherence(ignoring_generate_fn(64), num_images=12, seed=0, detector=detector)
    assert all(blind[a]["gap"] == 0.0 for a in DEFAULT_PAIRS) and blind["mean_gap"] == 0.0
    assert 0 < blind["text"]["pos"] < 1  # the scenes vary: the zero gap is not from empty images


def test_paired_mode_uses_the_same_seeds_for_a_prompt_and_its_negation(detector):
    calls = []

    def gen(prompts, seeds):
        calls.append((list(prompts), list(seeds)))
        return ignoring_generate_fn(64)(prompts, seeds)

    paired_adherence(gen, pairs={"text": DEFAULT_PAIRS["text"]}, num_images=3, seed=7, detector=detector)
    assert calls == [([DEFAULT_PAIRS["text"][0]] * 3 + [DEFAULT_PAIRS["text"][1]] * 3, [7, 8, 9, 7, 8, 9])]
    with pytest.raises(ValueError, match="must ask for it"):
        paired_adherence(gen, pairs={"box": DEFAULT_PAIRS["text"]}, num_images=1, detector=detector)


def test_report_shares_images_between_the_tables(detector):
    calls = []

    def gen(prompts, seeds):
        calls.append(len(prompts))
        return renders_generate_fn(64)(prompts, seeds)

    report = adherence_report(gen, prompts=[DEFAULT_PAIRS["box"][0], "Generate an image with 2 polyps."], num_images=2,
                              detector=detector)
    assert calls == [2 * (8 + 1)]  # the 8 pair prompts + 1 new prompt, once each
    assert report["paired"]["box"]["gap"] == 1.0
    assert report["counts"]["box"] == 2 and report["counts"]["polyp_count"] == 2
    assert report["accuracy"]["box"] == 1.0


def test_pipeline_generate_fn_seeds_each_image(tiny_text_encoder):
    from msdm.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline(tiny_text_encoder)
    gen = pipeline_generate_fn(pipe, batch_size=2, num_inference_steps=2, guidance_scale=2.0)
    a = gen(["Generate an image containing text.", "Generate an image with no polyps.",
             "Generate an image containing text."], [5, 6, 7])
    b = gen(["Generate an image containing text."], [7])  # another batch composition, same (prompt, seed)
    assert a.shape[1] == 3 and 0 <= float(a.min()) and float(a.max()) <= 1
    torch.testing.assert_close(a[2], b[0], atol=1e-5, rtol=0)
    assert not torch.allclose(a[0], a[2])  # another seed, another image


# ---------------------------------------------------------------------------------------------------------------------
# VAE check
# ---------------------------------------------------------------------------------------------------------------------


def test_detector_agreement_counts_what_a_round_trip_loses(detector):
    """'Reconstructions' = the same scenes with the box erased: the box verdict flips exactly on the box scenes."""
    rng = np.random.default_rng(5)
    scenes = [sample_attributes(rng) for _ in range(16)]
    inputs = torch.stack([_render(a, i) for i, a in enumerate(scenes)])
    no_box = torch.stack([_render(dataclasses.replace(a, box_artefact=False), i) for i, a in enumerate(scenes)])
    res = detector_agreement(inputs, no_box, detector)
    boxes = np.mean([a.box_artefact for a in scenes])
    assert 0 < boxes < 1
    assert res["box"]["rate_inputs"] == pytest.approx(boxes) and res["box"]["rate_reconstructions"] == 0.0
    assert res["box"]["agreement"] == pytest.approx(1 - boxes)
    assert res["text"]["agreement"] == 1.0 and res["instrument"]["agreement"] == 1.0
    assert detector_agreement(inputs, inputs, detector)["polyp_count"]["agreement"] == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# A folder in the challenge layout (msdm evaluate --adherence)
# ---------------------------------------------------------------------------------------------------------------------


def _write_folder(folder, prompts, n, generate_fn):
    folder.mkdir(parents=True, exist_ok=True)
    for p, prompt in enumerate(prompts, start=1):
        images = generate_fn([prompt] * n, list(range(n)))
        for i, img in enumerate(images, start=1):
            Image.fromarray((img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(
                folder / f"prompt{p:04d}_img{i:04d}.png")
    (folder / "prompts.json").write_text(json.dumps({str(k + 1): s for k, s in enumerate(prompts)}))


def test_folder_evaluation_and_cli(tmp_path, detector):
    prompts = [DEFAULT_PAIRS["text"][0], DEFAULT_PAIRS["box"][1], "Generate an image with 1 instrument."]
    _write_folder(tmp_path / "gen", prompts, 3, renders_generate_fn(64))
    res = evaluate_adherence_folder(tmp_path / "gen", detector=detector)
    assert res["accuracy"]["text"] == 1.0 and res["accuracy"]["box"] == 1.0 and res["accuracy"]["instrument"] == 1.0
    assert res["counts"]["text"] == 3 and res["per_prompt"][2]["prompt"] == prompts[1]

    from msdm.cli import main

    rc = main(["evaluate", str(tmp_path / "gen"), "--adherence", "--output", str(tmp_path / "a.json")])
    assert rc in (0, None)
    written = json.loads((tmp_path / "a.json").read_text())
    assert written["accuracy"]["text"] == 1.0 and written["counts"]["prompts"] == 9
    # the prompt file must cover every prompt number in the folder
    (tmp_path / "short.json").write_text(json.dumps({"1": prompts[0]}))
    with pytest.raises(ValueError, match="wrong prompt file"):
        evaluate_adherence_folder(tmp_path / "gen", tmp_path / "short.json", detector=detector)


def test_scene_for_honours_every_fact():
    rng = np.random.default_rng(0)
    for prompt in ["Generate an image with 3 polyps. Generate an image containing polyp snareandtube.",
                   "Generate an image with an an abnormality located in the center.",
                   "Generate an image from a gastroscopy procedure, not containing text and with no polyps."]:
        facts = parse_prompt(prompt)
        have = scene_facts(scene_for(prompt, rng))
        assert all(have[k] == v for k, v in facts.items() if k in have and v is not None), (prompt, have)
    with pytest.raises(ValueError, match="does not know"):
        scene_for("Generate an image containing the z-line.", rng)


def test_images_outside_zero_one_are_refused(detector):
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        detector.detect(torch.rand(2, 3, 32, 32) * 2 - 1)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        detector.detect(torch.rand(3, 32, 32))


def test_detector_training_is_deterministic():
    """The training script's loop (augmentation included) gives the same weights twice from the same seed."""
    from msdm.synthetic.train_polyp_detector import render_training_set, train

    images, targets = render_training_set(32, seed=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script does; results depend on the thread count
    try:
        a = train(images, targets, epochs=1, batch_size=16, seed=3, log=lambda _: None).state_dict()
        b = train(images, targets, epochs=1, batch_size=16, seed=3, log=lambda _: None).state_dict()
        c = train(images, targets, epochs=1, batch_size=16, seed=4, log=lambda _: None).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_box_detector_survives_a_green_to_cyan_shift():
    """The quickstart VAE turns the box's green tube cyan (docs/metrics.md): still a box; mucosa stays no box."""
    from msdm.synthetic.pixel_detectors import has_box_artefact

    rng = np.random.default_rng(8)
    scenes = [sample_attributes(rng) for _ in range(40)]
    assert 0 < sum(a.box_artefact for a in scenes) < 40
    for i, a in enumerate(scenes):
        x = _render(a, i)
        cyan = x.clone()
        cyan[2] = torch.maximum(x[2], 0.9 * x[1])  # blue up to the green: green -> cyan, red-dominant mucosa stays
        assert has_box_artefact(x) == has_box_artefact(cyan) == a.box_artefact, i
