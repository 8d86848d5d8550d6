"""Run by tests/test_perf_ddp.py: 2-process CPU DDP (gloo) fit of a tiny MSDMUNetModule on the synthetic DataModule,
training from the latent + text cache (filled by the two ranks before the first step, with the captions the
DataModule draws in both epochs; misses are errors).

Each rank writes what it saw, whether the frozen parts were in memory during training steps, its final weights'
checksum and the synced validation loss to OUT/rank{r}.json; rank 0 also saves the final U-Net weights.
"""

import json
import sys

import lightning.pytorch as pl
import torch

from datamodules.synthetic import SyntheticGIDataModule
from lightning_modules import MSDMUNetModule


class Record(pl.Callback):
    def __init__(self):
        self.ids, self.loaded = {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids.setdefault(trainer.current_epoch, []).extend(batch["id"])
        self.loaded.append(pl_module.frozen_loaded())


def main(te, vae, out, cache_dir):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    dm = SyntheticGIDataModule(num_train=8, num_val=4, resolution=32, batch_size=2, seed=3)
    module = MSDMUNetModule(preset="tiny", vae=vae, text_encoder=te, max_length=16, lr=1e-3, num_inference_steps=2,
                            cache_dir=cache_dir, cache_on_miss="error", cache_text_epochs=2)
    rec = Record()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[rec])
    trainer.fit(module, datamodule=dm)
    checksum = float(sum(p.double().sum() for p in module.unet.parameters()))
    r = trainer.global_rank
    if r == 0:
        torch.save(module.unet.state_dict(), f"{out}/unet.pt")
    with open(f"{out}/rank{r}.json", "w") as f:
        json.dump({"ids": rec.ids, "loaded": rec.loaded, "checksum": checksum, "world_size": trainer.world_size,
                   "val_loss": float(trainer.callback_metrics["val/loss"]),
                   "latent_misses": module.cache.latents.misses, "latent_hits": module.cache.latents.hits}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
