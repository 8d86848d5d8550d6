"""Run by tests/test_lora_ddp.py in a subprocess: 2-process CPU DDP (gloo) fit of a tiny FluxLoRAModule.

Lightning's `strategy="ddp"` re-launches this script for rank 1, so it must be a file. Each rank writes its LoRA
checksum and its text-cache statistics to OUT/rank{r}.json.
"""

import json
import sys

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_modules.flux_lora import FluxLoRAModule
from msdm.lora.testing import FolderImageCaptions

# (The module's setup registers the gloo process-group teardown at exit: lightning_modules.guards.)


def main(images, flux, out):
    torch.set_num_threads(1)
    pl.seed_everything(0)
    data = FolderImageCaptions(images, n=8, size=32)
    module = FluxLoRAModule(model=flux, rank=4, learning_rate=1e-2, frozen_dtype="float32", max_sequence_length=16,
                            text_cache_dir=f"{out}/cache", text_cache_key="sample", lora_output_dir=f"{out}/lora")
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                         default_root_dir=out, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=2, shuffle=True))
    checksum = float(sum(p.double().sum() for p in module.lora_parameters()))
    cache = module.text_cache()
    with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
        json.dump({"checksum": checksum, "world_size": trainer.world_size, "misses": cache.misses,
                   "ckpt": trainer.checkpoint_callback.best_model_path}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
