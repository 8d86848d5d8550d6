"""Which training state a generator's weights are: the epoch and step, with or without a Trainer.

``generation_info()`` (written into every generated image's provenance) names the weights by the training step they
come from. During ``fit`` that is the Trainer's step; a module restored with ``load_from_checkpoint`` has no Trainer,
so ``module.global_step`` reads 0 — and images made from a step-20 000 checkpoint would claim step 0. The modules
call :func:`remember_checkpoint` in ``on_load_checkpoint`` and :func:`weights_revision` in ``generation_info``.
"""

from __future__ import annotations


def remember_checkpoint(module, checkpoint: dict) -> None:
    """Keep the epoch and global step a checkpoint was saved at (``on_load_checkpoint``)."""
    module._checkpoint_progress = (int(checkpoint.get("epoch", 0) or 0), int(checkpoint.get("global_step", 0) or 0))


def weights_progress(module) -> tuple[int, int]:
    """``(epoch, global_step)``: the Trainer's while one is attached, else the loaded checkpoint's, else (0, 0)."""
    if getattr(module, "_trainer", None) is not None:
        return int(module.current_epoch), int(module.global_step)
    return getattr(module, "_checkpoint_progress", (0, 0))


def weights_revision(module) -> str:
    epoch, step = weights_progress(module)
    return f"epoch={epoch},step={step}"
