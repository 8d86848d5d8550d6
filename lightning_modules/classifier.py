"""``ClassifierModule``: the downstream classifier of ``msdm utility`` (does synthetic data help?), a thin shell.

The network comes from :mod:`msdm.utility.networks`; the metrics from :mod:`msdm.utility.metrics`. Batches are
``{"pixel_values", "target", "index", ...}`` (:class:`msdm.utility.mixing.MixedDataset`).

Under DDP every rank tests its share; the test predictions are gathered with torchmetrics ``CatMetric`` (its
``compute()`` all-gathers, on every rank), put back in dataset order by ``index`` and de-duplicated — the
``DistributedSampler`` pads the last share with repeats — so the test metrics equal a single-process run's.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import CatMetric

from msdm.utility.metrics import classification_metrics
from msdm.utility.networks import InputNorm, build_classifier


class ClassifierModule(pl.LightningModule):
    """Image classifier (multi-class, or multi-label with ``multilabel=True``).

    Args:
        num_classes: classes (multi-class) or labels (multi-label).
        multilabel: one sigmoid per label and binary cross-entropy, instead of softmax and cross-entropy.
        arch: ``small-cnn`` (default, trains from scratch on a CPU) or ``resnet18`` (torchvision).
        width: base width of ``small-cnn``.
        weights: local ResNet-18 state dict to start from (``None``: random initialisation, works offline).
        lr, weight_decay: AdamW.
        class_names: names in target order (stored with the checkpoint, for reading predictions later).

    Validation logs ``val/loss`` and, over the whole validation split at the epoch end, every metric of
    :mod:`msdm.utility.metrics` (``val/balanced_accuracy``, ``val/auroc``, ...): what early stopping may monitor.
    """

    def __init__(
        self,
        num_classes: int = 2,
        multilabel: bool = False,
        arch: str = "small-cnn",
        width: int = 32,
        weights: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        class_names: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.norm = InputNorm(imagenet=bool(weights))
        self.net = build_classifier(arch, num_classes, width, weights)
        self.loss_fn = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
        self.test_index, self.test_probs, self.test_target = CatMetric(), CatMetric(), CatMetric()
        self.val_index, self.val_probs, self.val_target = CatMetric(), CatMetric(), CatMetric()
        self.test_predictions: dict[str, torch.Tensor] | None = None  # filled at the end of test

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(pixel_values))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.hparams.multilabel else torch.softmax(logits, dim=-1)

    def _loss(self, logits, target):
        return self.loss_fn(logits, target.float() if self.hparams.multilabel else target.long())

    # ------------------------------------------------------------------ steps
    def training_step(self, batch, batch_idx):
        loss = self._loss(self(batch["pixel_values"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self(batch["pixel_values"])
        # Mean over the epoch weighted by batch size, synchronised across ranks.
        self.log("val/loss", self._loss(logits, batch["target"]), prog_bar=True, sync_dist=True,
                 batch_size=len(batch["target"]))
        self._collect(batch, self.probabilities(logits), self.val_index, self.val_probs, self.val_target)

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        _, probs, target = self._gathered(self.val_index, self.val_probs, self.val_target)
        if len(target):
            for name, value in classification_metrics(probs, target, self.hparams.multilabel).items():
                self.log(f"val/{name}", value, sync_dist=False)

    def test_step(self, batch, batch_idx):
        self._collect(batch, self.probabilities(self(batch["pixel_values"])), self.test_index, self.test_probs,
                      self.test_target)

    def on_test_epoch_end(self):
        index, probs, target = self._gathered(self.test_index, self.test_probs, self.test_target)
        self.test_predictions = {"index": index, "probs": probs, "target": target}
        for name, value in classification_metrics(probs, target, self.hparams.multilabel).items():
            self.log(f"test/{name}", value, sync_dist=False)

    # ------------------------------------------------------------------ exact predictions under DDP
    def _collect(self, batch, probs, index_m, probs_m, target_m):
        index_m.update(batch["index"].float())
        probs_m.update(probs)
        target_m.update(batch["target"].float() if self.hparams.multilabel else batch["target"].float()[:, None])

    def _gathered(self, index_m, probs_m, target_m):
        """(index, probs, target) of every sample once, in dataset order, gathered from all ranks; resets."""
        if not index_m.update_called:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0)
        # compute() all-gathers: called on every rank (torchmetrics#2684), logged with sync_dist=False.
        index = index_m.compute().long().reshape(-1)
        probs = probs_m.compute().reshape(len(index), -1)
        target = target_m.compute().reshape(len(index), -1)
        for m in (index_m, probs_m, target_m):
            m.reset()
        order = torch.argsort(index, stable=True)
        index, probs, target = index[order], probs[order], target[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]  # DistributedSampler padding repeats the first samples
        index, probs, target = index[keep].cpu(), probs[keep].float().cpu(), target[keep].cpu()
        return index, probs, (target if self.hparams.multilabel else target[:, 0].long())

    def predict_step(self, batch, batch_idx):
        return self.probabilities(self(batch["pixel_values"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
