"""Run by tests/test_utility_classifier.py: test a fixed ClassifierModule on 7 images with 1 or 2 CPU processes.

Lightning's ``strategy="ddp"`` re-launches this script for rank 1, so it must be a file. Rank 0 writes the gathered
test predictions and metrics to OUT/rank0.json.
"""

import json
import sys

import lightning.pytorch as pl
import torch

sys.path.insert(0, ".")
from datamodules.utility import UtilityDataModule  # noqa: E402
from lightning_modules.classifier import ClassifierModule  # noqa: E402
from msdm.utility.data import LabelledImages  # noqa: E402


def main(devices: int, out: str):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    data = LabelledImages(torch.randint(0, 256, (7, 3, 16, 16), generator=g, dtype=torch.uint8),
                          torch.tensor([0, 1, 0, 1, 1, 0, 1]), [f"i{k}" for k in range(7)], ["a", "b"])
    torch.manual_seed(0)
    model = ClassifierModule(num_classes=2, width=4)  # the same weights in every process and run
    dm = UtilityDataModule(data, data, [0, 1, 2], [3, 4], batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)
    if trainer.global_rank == 0:
        p = model.test_predictions
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        with open(f"{out}/rank0.json", "w") as f:
            json.dump({"index": p["index"].tolist(), "probs": p["probs"].tolist(), "metrics": metrics,
                       "world_size": trainer.world_size}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
