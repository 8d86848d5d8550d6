"""Run by tests/test_metrics_callbacks.py in a subprocess: GenerationMetrics under 2-process CPU DDP (gloo).

Lightning's `strategy="ddp"` re-launches this script for rank 1, so it must be a file, not a pytest function. With
DEVICES=1 it runs the same validation in one process. Each rank writes the metrics it logged to OUT/rank{r}.json.
"""

import json
import sys
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_modules import MSDMUNetModule
from lightning_modules.callbacks import GenerationMetrics
from msdm.testing import image_text_samples

PROMPTS = ["Generate an image containing a polyp.", "Show a picture with one polyp.",
           "Generate an image with 1 instrument.", "Display an image with one instrument."]


def main(images, te, biomedclip, inception, cache, out, devices):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    samples = image_text_samples(images, n=8, size=32)
    ids = [s["id"] for s in samples]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = MSDMUNetModule(preset="tiny", vae=None, text_encoder=te, max_length=16, num_inference_steps=2,
                                latent_scaling=1.0)
    cb = GenerationMetrics(prompts=PROMPTS, num_images_per_prompt=3, seed=7, paraphrase_pairs=True,
                           real_mapping={"1": ids[0:3], "2": ids[0:3], "3": ids[3:6], "4": ids[3:6]},
                           inception=inception, biomedclip=biomedclip, cache_dir=cache, batch_size=8)
    devices = int(devices)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb])
    trainer.validate(module, DataLoader(samples, batch_size=2), verbose=False)  # Lightning shards this loader
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
        json.dump({"metrics": cb.last_metrics, "world_size": trainer.world_size}, f)


if __name__ == "__main__":
    main(*sys.argv[1:8])
