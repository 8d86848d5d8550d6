"""Run by tests/test_adherence_callbacks.py in a subprocess: AdherenceCallback under 2-process CPU DDP (gloo).

Lightning's `strategy="ddp"` re-launches this script for rank 1, so it must be a file, not a pytest function. Each
rank writes the paired result it logged to OUT/rank{r}.json; rank 0 also writes what one process computes with
paired_adherence on the same module (every image, no sharding), the reference the ranks' sum must equal.
"""

import json
import sys
import warnings

import lightning.pytorch as pl
import torch

from datamodules.synthetic import SyntheticGIDataModule
from lightning_modules import AdherenceCallback, MSDMUNetModule
from msdm.metrics.adherence import module_generate_fn, paired_adherence


def main(te, out):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = MSDMUNetModule(preset="tiny", vae=None, text_encoder=te, max_length=16, image_size=32,
                                num_inference_steps=2, latent_scaling=1.0)
    cb = AdherenceCallback(num_images=5, num_inference_steps=2, seed=3)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb], limit_val_batches=1)
    dm = SyntheticGIDataModule(num_train=4, num_val=4, resolution=32, batch_size=2)
    trainer.validate(module, datamodule=dm, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("adherence/")}
    record = {"result": cb.last_result, "logged": logged, "world_size": trainer.world_size}
    if trainer.global_rank == 0:
        record["single"] = paired_adherence(module_generate_fn(module, num_inference_steps=2), num_images=5, seed=3,
                                            detector=cb._detector)
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
