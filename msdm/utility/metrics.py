"""The four classification metrics of the utility experiment, from predicted probabilities (torchmetrics).

* **accuracy** — fraction of correct predictions (multi-label: of correct label decisions);
* **balanced accuracy** — mean per-class recall (multi-label: mean over labels of (TPR + TNR) / 2), insensitive to
  the class prior, so a generator cannot score by shifting it;
* **macro-F1** — unweighted mean of the per-class (per-label) F1;
* **AUROC** — one-vs-rest, macro-averaged (binary tasks: the ordinary AUROC); threshold-free.

Multi-class predictions are the argmax of the probabilities; multi-label decisions threshold each label at 0.5.
"""

from __future__ import annotations

import torch

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")
LABELS = {"accuracy": "accuracy", "balanced_accuracy": "balanced acc.", "macro_f1": "macro-F1", "auroc": "AUROC"}


def classification_metrics(probs: torch.Tensor, target: torch.Tensor, multilabel: bool = False) -> dict[str, float]:
    """``probs`` [N, C] (softmax, or per-label sigmoid for ``multilabel``), ``target`` [N] int or [N, L] 0/1."""
    from torchmetrics.functional import classification as F

    probs = probs.float()
    if multilabel:
        t = target.long()
        n = probs.shape[1]
        kw = {"num_labels": n, "threshold": 0.5}
        recall = F.multilabel_recall(probs, t, average="macro", **kw)
        specificity = F.multilabel_specificity(probs, t, average="macro", **kw)
        out = {
            "accuracy": F.multilabel_accuracy(probs, t, average="micro", **kw),
            "balanced_accuracy": (recall + specificity) / 2,
            "macro_f1": F.multilabel_f1_score(probs, t, average="macro", **kw),
            "auroc": F.multilabel_auroc(probs, t, num_labels=n, average="macro"),
        }
    else:
        t = target.long()
        n = probs.shape[1]
        out = {
            "accuracy": F.multiclass_accuracy(probs, t, num_classes=n, average="micro"),
            "balanced_accuracy": F.multiclass_recall(probs, t, num_classes=n, average="macro"),
            "macro_f1": F.multiclass_f1_score(probs, t, num_classes=n, average="macro"),
            "auroc": F.multiclass_auroc(probs, t, num_classes=n, average="macro"),
        }
    return {k: float(v) for k, v in out.items()}
