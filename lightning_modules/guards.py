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


def reseed_for_step(module) -> None:
    """Make this step's randomness a function of (global seed, global step, rank) only.

    Noise, timesteps, CFG dropout, posterior samples and ``nn.Dropout`` all draw from the global RNG; reseeding it
    at every training step makes a run resumed from a checkpoint draw exactly what the uninterrupted run drew,
    without saving RNG states (which Lightning does not restore by default). Data order is made resumable
    separately by epoch-seeded samplers (:class:`msdm.data.epoch_sampler.EpochShuffleSampler`, or Lightning's
    ``DistributedSampler`` under DDP).
    """
    import os

    base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
    seed = (base * 1_000_003 + module.global_step * 7919 + module.global_rank * 104_729) % (2**63 - 1)
    torch.manual_seed(seed)
