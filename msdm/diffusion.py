"""Diffusion process of MSDM on top of diffusers' schedulers (no hand-written scheduler).

Training (Prompt to Polyp §4.2.1; reference ``train_msdm_unet.py`` → ``GaussianNoiseScheduler(timesteps=1000,
beta_start=0.002, beta_end=0.02, schedule_strategy='scaled_linear')``, ε-objective, L1 loss): 1000 steps, betas
``linspace(√0.002, √0.02)²`` — diffusers' ``scaled_linear`` is the same formula.

Sampling: DDIM with η = 1 and 150 steps on ``linspace(0, 999, 150)`` (the reference's ``denoise(use_ddim=True)``),
or DPM-Solver++ (multistep, 2nd order) as the fast option.

Guidance conventions. The reference combines ``(s + 1)·cond − s·uncond``; diffusers (and this package) use
``uncond + s'·(cond − uncond)``. They are equal for ``s' = s + 1``: the reference's 3.5 is 4.5 here
(:func:`guidance_from_reference`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

TRAIN_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.002,
    beta_end=0.02,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,  # latents are not bounded to [-1, 1]
)

SAMPLERS = ("ddim", "dpm++", "dpm++sde", "ddpm", "euler")
REFERENCE_STEPS = 150  # DDIM-150, the reference sampler
REFERENCE_GUIDANCE = 3.5  # in the reference's (s+1)·cond − s·uncond convention


def guidance_from_reference(s_reference: float) -> float:
    """Map a guidance scale of the reference code's convention to diffusers' (``s + 1``)."""
    return s_reference + 1.0


def training_scheduler(**overrides) -> DDPMScheduler:
    return DDPMScheduler(**{**TRAIN_SCHEDULER_CONFIG, **overrides})


def make_sampler(name: str, config: dict | None = None):
    """A diffusers scheduler for sampling that shares the training noise schedule ``config``.

    ``ddim``: DDIM with ``linspace`` spacing (reference timesteps); pass ``eta=1.0`` at call time for the reference.
    ``dpm++``: DPM-Solver++ (2M), deterministic (an ODE solver, like DDIM with η = 0). ``dpm++sde``: SDE-DPM-Solver++
    (2M), stochastic like the reference's DDIM with η = 1 — the fast sampler closest to DDIM-150's images
    (docs/benchmarks.md). ``ddpm``: ancestral; ``euler``: Euler discrete.
    """
    config = dict(config or TRAIN_SCHEDULER_CONFIG)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if name == "ddim":
        return DDIMScheduler.from_config({**config, "timestep_spacing": "linspace", "set_alpha_to_one": True})
    if name in ("dpm++", "dpmsolver++", "dpm"):
        return DPMSolverMultistepScheduler.from_config(
            {**config, "algorithm_type": "dpmsolver++", "use_karras_sigmas": False, "solver_order": 2,
             "timestep_spacing": "linspace", "final_sigmas_type": "zero", "lower_order_final": True}
        )
    if name in ("dpm++sde", "sde-dpmsolver++"):
        return DPMSolverMultistepScheduler.from_config(
            {**config, "algorithm_type": "sde-dpmsolver++", "solver_order": 2, "timestep_spacing": "linspace",
             "final_sigmas_type": "zero", "lower_order_final": True,
             # Karras sigmas spend more steps at low noise: on the quickstart model 3.3x closer to DDIM-150 than linspace
             # sigmas at 10 steps, 1.4x at 20 (docs/benchmarks.md, Fast sampling)
             "use_karras_sigmas": True}
        )
    if name == "ddpm":
        return DDPMScheduler.from_config({**config, "timestep_spacing": "linspace"})
    if name == "euler":
        return EulerDiscreteScheduler.from_config({**config, "timestep_spacing": "linspace"})
    raise ValueError(f"unknown sampler {name!r}; choose one of {SAMPLERS}")


def sampler_name(scheduler) -> str:
    if type(scheduler).__name__ == "DPMSolverMultistepScheduler" and "sde" in scheduler.config.algorithm_type:
        return "dpm++sde"
    return {
        "DDIMScheduler": "ddim",
        "DPMSolverMultistepScheduler": "dpm++",
        "DDPMScheduler": "ddpm",
        "EulerDiscreteScheduler": "euler",
    }.get(type(scheduler).__name__, type(scheduler).__name__)


def drop_captions(captions: list[str], p: float, generator: torch.Generator | None = None) -> tuple[list[str], torch.Tensor]:
    """Classifier-free-guidance dropout, **per sample**: each caption becomes "" with probability ``p``.

    The reference drew one coin per batch (and then did not apply it); per-sample dropout is what CFG needs.
    Returns the new captions and the boolean drop mask.
    """
    drop = torch.rand(len(captions), generator=generator) < p
    return ["" if d else c for c, d in zip(captions, drop.tolist())], drop


def diffusion_loss(
    unet,
    latents: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor | None,
    scheduler: DDPMScheduler,
    loss_type: str = "l1",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    timesteps: torch.Tensor | None = None,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """ε-prediction loss at uniformly drawn timesteps (reference: L1; ``loss_type="mse"`` as the option).

    ``noise`` / ``timesteps`` may be given (e.g. :func:`keyed_noise` for a validation loss that does not depend on
    batching or on the number of ranks); otherwise they are drawn, noise first, from ``generator``.
    ``memory_format=torch.channels_last`` feeds the network NHWC activations (for a channels-last U-Net).
    """
    b = latents.shape[0]
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if timesteps is None:
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator,
                                  device=latents.device)
    noise, t = noise.to(latents.device, latents.dtype), timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    if memory_format is not None:
        noisy = noisy.contiguous(memory_format=memory_format)
    pred = unet(noisy, t, text_states, text_mask).sample
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    if loss_type == "l1":
        return F.l1_loss(pred.float(), target.float())
    if loss_type == "mse":
        return F.mse_loss(pred.float(), target.float())
    raise ValueError(f"loss_type must be 'l1' or 'mse', got {loss_type!r}")


def keyed_noise(keys: list[str], shape: tuple[int, ...], seed: int, num_train_timesteps: int = 1000,
                device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
    """Noise ``[B, *shape]`` and timesteps ``[B]`` where row ``i`` depends only on ``(seed, keys[i])``.

    For evaluation losses: keyed by sample (id and caption), a sample gets the same noise whatever batch or rank it
    lands in, so a validation loss under DDP equals the single-process value (given equal per-rank sample counts).
    """
    import hashlib

    noise, ts = [], []
    for k in keys:
        s = int.from_bytes(hashlib.sha256(f"{seed}\x00{k}".encode()).digest()[:8], "little") & ((1 << 63) - 1)
        g = torch.Generator().manual_seed(s)
        noise.append(torch.randn(shape, generator=g))
        ts.append(torch.randint(0, num_train_timesteps, (1,), generator=g))
    return torch.stack(noise).to(device=device, dtype=dtype), torch.cat(ts).to(device)
