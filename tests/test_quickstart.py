"""``msdm quickstart`` end to end at toy size: both stages train, the pipeline exports and reloads, and the sample
grid carries verifiable provenance. (The full-size run and its time are in docs/benchmarks.md#quickstart.)"""

import json

import numpy as np
import torch
from PIL import Image

from msdm.cli import main
from msdm.pipeline import MSDMPipeline
from msdm.provenance import read_record


def test_quickstart_at_toy_size(tmp_path, tiny_text_encoder, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--out", str(out), "--vae-steps", "3", "--unet-steps", "3", "--num-train", "32",
               "--batch-size", "8", "--resolution", "32", "--sample-steps", "2", "--text-encoder", tiny_text_encoder])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "msdm quickstart finished" in printed and "total" in printed
    for f in ("samples.png", "real_examples.png", "vae/checkpoints/last.ckpt", "unet/checkpoints/last.ckpt"):
        assert (out / f).is_file(), f
    grid = np.asarray(Image.open(out / "samples.png"))
    assert grid.shape[:2] == (4 * 34 + 2, 6 * 34 + 2)  # 4 prompts x 6 tiles of 32² + torchvision's 2-px padding
    record = read_record(out / "samples.png")
    assert record["synthetic"] is True and record["sampler"] == "dpm++sde" and len(record["prompts"]) == 4
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
    imgs = pipe(["Generate an image containing a polyp."], num_inference_steps=2,
                generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert imgs.shape == (1, 3, 32, 32) and torch.isfinite(imgs).all()
