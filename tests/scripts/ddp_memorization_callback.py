"""Run by tests/test_callbacks_memorization.py in a subprocess: MemorizationCallback under 2-process CPU DDP (gloo).

Lightning's `strategy="ddp"` re-launches this script for rank 1, so it must be a file, not a pytest function. With
DEVICES=1 it runs the same validation in one process. Each rank writes the metrics it logged to OUT/rank{r}.json.
"""

import json
import sys
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_modules import MemorizationCallback, MSDMUNetModule
from msdm.testing import image_text_samples


def main(train, calibration, te, inception, out, devices):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = MSDMUNetModule(preset="tiny", vae=None, text_encoder=te, max_length=16, num_inference_steps=2,
                                latent_scaling=1.0, image_size=32)
    # 5 images: an uneven split over 2 ranks (2 + 3), gathered on rank 0 in global order
    cb = MemorizationCallback(train_images=train, calibration_images=calibration, num_images=5, seed=3,
                              prompts=["Generate an image containing a polyp."], inception=inception,
                              num_bootstrap=200, batch_size=4)
    devices = int(devices)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=out, callbacks=[cb])
    trainer.validate(module, DataLoader(image_text_samples(calibration, n=4, size=32), batch_size=2), verbose=False)
    rows = [{k: r[k] for k in ("generated", "nearest_train_pixels", "ssim", "copy")} for r in cb.last_result.rows] \
        if cb.last_result is not None else None
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
        json.dump({"metrics": cb.last_metrics, "rows": rows, "world_size": trainer.world_size}, f)


if __name__ == "__main__":
    main(*sys.argv[1:7])
