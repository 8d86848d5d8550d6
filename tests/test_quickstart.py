"""``msdm quickstart`` end to end at toy size: both stages train, the pipeline exports and reloads, and the sample
grid carries verifiable provenance. (The full-size run and its time are in docs/benchmarks.md#quickstart.)"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from msdm.cli import main
from msdm.commands.quickstart import PAIRS, PROMPTS, RECIPES, resolve_recipe
from msdm.pipeline import MSDMPipeline
from msdm.provenance import read_record


def test_quickstart_at_toy_size(tmp_path, tiny_text_encoder, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--data", "synthetic", "--out", str(out), "--vae-steps", "3", "--unet-steps", "3",
               "--num-train", "32", "--batch-size", "8", "--vae-batch-size", "4", "--resolution", "32", "--sample-steps", "2",
               "--adherence-images", "2", "--text-encoder", tiny_text_encoder])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "msdm quickstart finished" in printed and "total" in printed
    for f in ("samples.png", "real_examples.png", "vae/checkpoints/last.ckpt", "unet/checkpoints/last.ckpt"):
        assert (out / f).is_file(), f
    grid = np.asarray(Image.open(out / "samples.png"))
    # 4 attributes x (prompt, negation) rows x 6 tiles of 32² + torchvision's 2-px padding
    assert grid.shape[:2] == (8 * 34 + 2, 6 * 34 + 2)
    record = read_record(out / "samples.png")
    assert record["synthetic"] is True and record["sampler"] == "dpm++sde" and record["prompts"] == PROMPTS
    assert record["guidance_scale"] == RECIPES["adherent"]["guidance_scale"] and "column j uses seed + j" in record["layout"]
    # the paired adherence check: same seeds under each prompt and its negation, printed and saved
    adherence = json.loads((out / "adherence.json").read_text())
    assert set(adherence["paired"]) == {"box", "text", "instrument", "polyp", "mean_gap"}
    for attr in PAIRS:
        r = adherence["paired"][attr]
        assert r["n"] == 6 and r["gap"] == r["pos"] - r["neg"] and 0 <= r["pos"] <= 1, r  # grid's 6 >= the 2 asked
    assert "paired adherence" in printed and "mean gap" in printed
    assert main(["provenance", str(out / "samples.png")]) == 0
    assert "samples.png" in json.loads((out / "provenance.json").read_text())["files"]
    # TensorBoard holds the sample grid (and no hp_metric)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {"images": set(), "scalars": set()}
    for events in (out / "unet").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags["images"] |= set(acc.Tags()["images"])
        tags["scalars"] |= set(acc.Tags()["scalars"])
    assert "samples" in tags["images"] and "hp_metric" not in tags["scalars"], tags
    pipe = MSDMPipeline.from_pretrained(str(out / "pipeline"))
    assert pipe.config.guidance_scale == RECIPES["adherent"]["guidance_scale"]  # the exported folder samples as validated
    imgs = pipe(["Generate an image containing a polyp."], num_inference_steps=2,
                generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert imgs.shape == (1, 3, 32, 32) and torch.isfinite(imgs).all()


def test_quickstart_recipes_fill_only_unset_options():
    from argparse import Namespace

    args = Namespace(recipe="paper", vae_steps=None, vae_batch_size=None, unet_steps=None, batch_size=None,
                     caption_facts=None, max_length=None, guidance_scale=5.0)
    resolve_recipe(args)
    assert (args.vae_steps, args.vae_batch_size, args.unet_steps, args.batch_size) == (300, 16, 800, 16)
    assert (args.caption_facts, args.max_length) == (1, 64)
    assert args.guidance_scale == 5.0  # given explicitly: kept
    assert PROMPTS == [p for pair in PAIRS.values() for p in pair] and len(PROMPTS) == 8


def test_quickstart_pairs_are_the_adherence_pairs():
    # the grid rows are exactly what the paired metric scores (check_pairs parses each prompt and its negation)
    from msdm.metrics.adherence import DEFAULT_PAIRS, check_pairs

    check_pairs(PAIRS)
    assert {k: tuple(v) for k, v in PAIRS.items()} == DEFAULT_PAIRS


@pytest.mark.slow  # ~20 CPU-s, 110 s wall on the shared 2-core machine
def test_quickstart_on_the_packaged_real_frames_at_toy_size(tmp_path, tiny_text_encoder, capsys):
    """--data kvasir (the default): trains on the shipped frames, prints FID with its floor, saturation and the real
    paired table, and writes a grid whose rows put generated images beside held-out frames that satisfy the prompt."""
    from msdm.commands._quickstart_kvasir import KVASIR
    from msdm.facts.sample import sample_split
    from msdm.metrics.adherence.real_detector import REAL_PAIRS
    from msdm.metrics.adherence.real_retrieval import frames_satisfying

    out = tmp_path / "qs"
    rc = main(["quickstart", "--out", str(out), "--vae-steps", "3", "--decoder-steps", "2", "--unet-steps", "3", "--batch-size", "8",
               "--vae-batch-size", "4", "--sample-steps", "2", "--adherence-images", "2", "--eval-images", "8",
               "--text-encoder", tiny_text_encoder])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "real Kvasir-SEG frames" in printed and "ONE seed" in printed and "floor" in printed
    assert "saturated pixels" in printed and "mean gap" in printed
    res = json.loads((out / "results.json").read_text())
    r = res["realism"]
    assert r["n"] == 8 and r["fid"] > 0 and r["floor"] > 0 and abs(r["ratio"] - r["fid"] / r["floor"]) < 1e-9
    assert 0 <= r["clipped_255"] <= 1 and 0 <= r["real_clipped_255"] <= 1
    assert set(res["paired"]) == {*REAL_PAIRS, "mean_gap"} and res["recipe"] == "msdm"
    for attr in REAL_PAIRS:
        p = res["paired"][attr]
        assert p["n"] == 6 and p["gap"] == p["pos"] - p["neg"]
    # the grid: one row per REAL_PAIRS prompt; 6 generated | spacer | 4 real frames (64 px + 2 px padding)
    prompts = [p for pair in REAL_PAIRS.values() for p in pair]
    cols = KVASIR["grid_images"] + 1 + KVASIR["grid_real"]
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.shape[:2] == (len(prompts) * 66 + 2, cols * 66 + 2)
    record = read_record(out / "samples.png")
    assert record["prompts"] == prompts
    held = sample_split()[1][:8]
    for prompt in prompts:  # the real frames shown are held-out frames that satisfy the prompt
        shown = record["real_frames"][prompt]
        assert shown == [held[i][0] for i in frames_satisfying(prompt, held)][: KVASIR["grid_real"]]
        k = prompts.index(prompt)
        for j, fid in enumerate(shown):  # and the tiles are those frames' pixels
            tile = grid[2 + k * 66 : 66 + k * 66, 2 + (7 + j) * 66 : 66 + (7 + j) * 66].astype(int)
            frame = np.asarray(Image.open(next(h[1] for h in held if h[0] == fid)).convert("RGB")).astype(int)
            assert np.abs(tile - frame).max() <= 1
    pipe = MSDMPipeline.from_pretrained(str(out / "pipeline"))
    imgs = pipe(["Generate an image with 1 polyp."], num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                output_type="pt").images
    assert imgs.shape == (1, 3, 64, 64) and torch.isfinite(imgs).all()


def test_quickstart_kvasir_refuses_other_resolutions_and_synthetic_recipes(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path / "a"), "--resolution", "32"]) == 2
    assert "64 px" in capsys.readouterr().err
    assert main(["quickstart", "--out", str(tmp_path / "b"), "--recipe", "adherent"]) == 2
    assert main(["quickstart", "--data", "synthetic", "--out", str(tmp_path / "c"), "--recipe", "msdm"]) == 2


def test_the_real_frames_quickstart_keeps_cfg_at_its_short_budget():
    # the msdm recipe guides with its half-trained EMA (autoguidance), measured better at the bench's 4 000 U-Net
    # steps; at the quickstart's 2 000 the box prompt needs classifier-free guidance (docs/benchmarks.md)
    from argparse import Namespace

    from msdm.commands._quickstart_kvasir import _recipe
    from msdm.training.recipes import get_recipe

    def args(**kw):
        base = dict(recipe=None, vae_steps=None, unet_steps=None, vae_batch_size=None, batch_size=None,
                    caption_facts=None, adherence_images=None, guidance_scale=None, sampler=None, sample_steps=None,
                    max_length=None, unet_lr=None, vae_lr=None)
        return Namespace(**{**base, **kw})

    assert get_recipe("msdm")["unet"]["autoguidance"] == 0.5
    unet = _recipe(args())["unet"]
    assert unet["autoguidance"] is None and unet["guidance_scale"] == 1.5
    assert _recipe(args(guidance_scale=3.0))["unet"]["guidance_scale"] == 3.0  # given explicitly: kept
    assert _recipe(args(decoder_steps=5))["vae"]["decoder_steps"] == 5
    assert _recipe(args())["vae"]["decoder_steps"] == get_recipe("msdm")["vae"]["decoder_steps"]
    assert _recipe(args(recipe="paper"))["unet"].get("autoguidance") is None
    assert _recipe(args(recipe="paper"))["unet"]["guidance_scale"] == get_recipe("paper")["unet"]["guidance_scale"]
