"""Run by tests/test_ddp.py in a subprocess: 2-process CPU DDP (gloo) fit of a tiny MSDMUNetModule.

Lightning's `strategy="ddp"` re-launches this script for rank 1, so it must be a file, not a pytest function.
Each rank writes what it saw and its final weights' checksum to OUT/rank{r}.json.
"""

import json
import sys

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_modules import MSDMUNetModule
from msdm.testing import image_text_samples


class Record(pl.Callback):
    def __init__(self):
        self.ids = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids.setdefault(trainer.current_epoch, []).extend(batch["id"])


def main(images, te, vae, out):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    samples = image_text_samples(images, n=8, size=32)
    module = MSDMUNetModule(preset="tiny", vae=vae, text_encoder=te, max_length=16, lr=1e-3, num_inference_steps=2)
    rec = Record()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[rec])
    trainer.fit(module, DataLoader(samples, batch_size=2, shuffle=True))
    checksum = float(sum(p.double().sum() for p in module.unet.parameters()))
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
        json.dump({"ids": rec.ids, "checksum": checksum, "world_size": trainer.world_size}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
