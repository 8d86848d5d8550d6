"""Small reliability helpers shared by every generator LightningModule."""

from __future__ import annotations

import atexit

import torch

_TEARDOWN_REGISTERED = False


def ensure_finite(module, loss: torch.Tensor, what: str = "loss") -> None:
    """Stop training with a clear message when ``loss`` is NaN/inf — *before* backward, so weights stay good.

    Under DDP every rank takes the same decision (one boolean all-reduce), so no rank is left waiting in a
    collective while another raises. Checkpoints already on disk (``last.ckpt``) are untouched.
    """
    finite = bool(torch.isfinite(loss.detach()).all())
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.world_size > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if not finite:
        step = module.global_step
        epoch = module.current_epoch
        raise FloatingPointError(
            f"non-finite {what} ({loss.detach().float().item() if loss.numel() == 1 else 'tensor'}) at global step "
            f"{step} (epoch {epoch}); training stopped before the optimizer step, so the weights and the last saved "
            "checkpoint are still finite. Lower the learning rate, check the data for bad samples, or use "
            "gradient clipping (--trainer.gradient_clip_val), then resume with --ckpt_path=last."
        )


def register_gloo_teardown() -> None:
    """Destroy the process group at interpreter exit.

    Lightning registers this teardown only for NCCL; gloo runs (CPU DDP) otherwise abort at exit now and then with
    "terminate called without an active exception". Registering it for every backend made repeated runs clean.
    """
    global _TEARDOWN_REGISTERED
    if _TEARDOWN_REGISTERED:
        return
    from lightning.fabric.utilities.distributed import _destroy_dist_connection

    atexit.register(_destroy_dist_connection)
    _TEARDOWN_REGISTERED = True


def step_keys(module, batch_idx: int) -> tuple[int, int, int]:
    """``(global step, micro-batch, rank)``: what every random draw of a training step is keyed on.

    ``global_step`` counts optimizer steps and is restored exactly from any checkpoint; the micro-batch (position in
    the gradient-accumulation window, 0 without accumulation) tells apart the batches of one optimizer step, following
    Lightning's own accumulation boundaries; the rank gives each DDP process its own draws. Not ``(epoch, batch_idx)``
    alone: that pair named other batches after a mid-epoch resume, before the loader became resumable.
    """
    trainer = getattr(module, "_trainer", None)
    accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1) if trainer is not None else 1
    return int(module.global_step), int(batch_idx) % accumulate, int(module.global_rank)


def run_seed(module) -> int:
    """The run's seed: ``seed_everything``'s value (``PL_GLOBAL_SEED``), else 0."""
    import os

    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


def reseed_for_step(module, batch_idx: int = 0, seed: int | None = None) -> None:
    """Seed the global RNGs from ``(run seed, global step, micro-batch, rank)`` (:func:`step_keys`) at a step's start.

    Noise, timesteps, CFG dropout, posterior samples and ``nn.Dropout`` all draw from the global RNG; reseeding it
    at every training step makes a run resumed from any checkpoint (mid-epoch included) draw exactly what the
    uninterrupted run drew, without saving RNG states. The data order and the per-sample choices of the data layer
    are keyed separately on ``(seed, epoch, sample index)`` (:mod:`msdm.data.rng`), and the training loader's
    position within the epoch is saved in the checkpoint (:class:`msdm.data.loader.ResumableDataLoader`).
    """
    from msdm.data import rng

    rng.seed_torch(run_seed(module) if seed is None else seed, "train-step", *step_keys(module, batch_idx))
