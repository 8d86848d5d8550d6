"""``msdm quickstart`` end to end at toy size: both stages train, the pipeline exports and reloads, and the sample
grid carries verifiable provenance. (The full-size run and its time are in docs/benchmarks.md#quickstart.)"""

import json

import numpy as np
import torch
from PIL import Image

from msdm.cli import main
from msdm.commands.quickstart import PAIRS, PROMPTS, RECIPES, resolve_recipe
from msdm.pipeline import MSDMPipeline
from msdm.provenance import read_record


def test_quickstart_at_toy_size(tmp_path, tiny_text_encoder, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--out", str(out), "--vae-steps", "3", "--unet-steps", "3", "--num-train", "32",
               "--batch-size", "8", "--vae-batch-size", "4", "--resolution", "32", "--sample-steps", "2",
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
