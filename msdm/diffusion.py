"""Diffusion process of MSDM on top of diffusers' schedulers (no hand-written scheduler).

Training (Prompt to Polyp §4.2.1; reference ``train_msdm_unet.py`` → ``GaussianNoiseScheduler(timesteps=1000,
beta_start=0.002, beta_end=0.02, schedule_strategy='scaled_linear')``, ε-objective, L1 loss): 1000 steps, betas
``linspace(√0.002, √0.02)²`` — diffusers' ``scaled_linear`` is the same formula.

Sampling: the samplers (DDIM with η = 1 and 150 steps on ``linspace(0, 999, 150)``, the reference's
``denoise(use_ddim=True)``; DPM-Solver++ as the fast option; ...) are the registry :mod:`msdm.generators.samplers`;
they share this module's training schedule.

Guidance conventions. The reference combines ``(s + 1)·cond − s·uncond``; diffusers (and this package) use
``uncond + s'·(cond − uncond)``. They are equal for ``s' = s + 1``: the reference's 3.5 is 4.5 here
(:func:`guidance_from_reference`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

TRAIN_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.002,
    beta_end=0.02,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,  # latents are not bounded to [-1, 1]
)

REFERENCE_STEPS = 150  # DDIM-150, the reference sampler
REFERENCE_GUIDANCE = 3.5  # in the reference's (s+1)·cond − s·uncond convention


def guidance_from_reference(s_reference: float) -> float:
    """Map a guidance scale of the reference code's convention to diffusers' (``s + 1``)."""
    return s_reference + 1.0


def training_scheduler(prediction_type: str = "epsilon", zero_terminal_snr: bool = False, **overrides) -> DDPMScheduler:
    """The training noise process: the paper's schedule (ε-prediction) by default.

    ``prediction_type="v_prediction"`` trains the U-Net on ``v = √ᾱ·ε − √(1−ᾱ)·x₀`` (Salimans & Ho 2022) and
    ``zero_terminal_snr=True`` rescales the betas so the last step is pure noise (Lin et al. 2024, "Common diffusion
    noise schedules and sample steps are flawed", Alg. 1: diffusers' ``rescale_betas_zero_snr``). The paper's schedule
    keeps ᾱ_T = 7.5e-5 (√ᾱ_T = 0.9 % of the signal, mostly its low frequencies): training never shows pure noise
    while sampling starts from it, which biases the mean brightness of images (Lin et al. §2); with v-prediction
    the terminal step stays learnable (ε-prediction is undefined there).
    Both go into every sampler and exported pipeline through the scheduler config."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    if zero_terminal_snr and prediction_type == "epsilon":
        raise ValueError("zero_terminal_snr needs prediction_type='v_prediction' (ε is not identifiable at SNR 0; "
                         "Lin et al. 2024 §3.2)")
    config = {**TRAIN_SCHEDULER_CONFIG, "prediction_type": prediction_type, **overrides}
    if zero_terminal_snr:
        config["rescale_betas_zero_snr"] = True
    return DDPMScheduler(**config)


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``ᾱ_t / (1 − ᾱ_t)`` of each timestep."""
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1 - ac).clamp(min=1e-12)


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float,
                    offset: float | None = None) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", Eq. 8):
    low-noise steps, which are easy and whose gradients conflict with the rest, stop dominating.

    ε-prediction: ``min(SNR, γ) / SNR``. v-prediction: ``min(SNR + 1, γ) / (SNR + 1)``, the form of diffusers'
    ``train_text_to_image_sdxl.py`` ("the velocity objective requires that we add one to SNR values"): the v-loss
    weighs x₀ by ``SNR + 1``, so this caps the low-noise steps and keeps weight 1 at high noise. The other form,
    ``min(SNR, γ) / (SNR + 1)``, falls to 0 as SNR → 0; with zero terminal SNR that starves exactly the steps where
    an image's layout, and so what a prompt asks for, is decided (measured on real frames: a box-artefact prompt was
    ignored, paired gap 0.00 vs 0.94 without the weights; docs/benchmarks.md, Real frames).

    ``offset`` generalises both forms. In x₀ terms (every objective is an x₀ loss times a weight: ε times SNR, v times
    SNR + 1) the weight is ``min(SNR + offset, γ)``: ``offset = 0`` is Hang et al.'s min-SNR (the ε default, and the
    "other form" for v), ``offset = 1`` the SDXL form (the v default); a value between keeps some weight at high noise
    (``offset`` at SNR = 0) while the mid-noise steps keep Hang's weights (docs/benchmarks.md, Real frames)."""
    s = snr(scheduler, timesteps)
    v = scheduler.config.prediction_type == "v_prediction"
    c = (1.0 if v else 0.0) if offset is None else float(offset)
    objective = s + 1 if v else s  # the objective's own x₀ weight
    return (s + c).clamp(max=gamma) / objective.clamp(min=1e-12)


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
    snr_gamma: float | None = None,
    snr_offset: float | None = None,
) -> torch.Tensor:
    """Denoising loss at uniformly drawn timesteps, on the scheduler's target (ε as the reference, or v): L1 as the
    reference, ``loss_type="mse"`` as the option; ``snr_gamma`` (and ``snr_offset``) weight each sample by :func:`min_snr_weights`.

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
    if loss_type not in ("l1", "mse"):
        raise ValueError(f"loss_type must be 'l1' or 'mse', got {loss_type!r}")
    loss_fn = F.l1_loss if loss_type == "l1" else F.mse_loss
    if not snr_gamma:
        return loss_fn(pred.float(), target.float())
    per = loss_fn(pred.float(), target.float(), reduction="none")
    weights = min_snr_weights(scheduler, t, snr_gamma, snr_offset)
    return (per.mean(dim=tuple(range(1, per.ndim))) * weights).mean()


def evaluation_loss(
    unet,
    latents: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor | None,
    scheduler: DDPMScheduler,
    loss_type: str,
    seed: int,
    keys: list[str] | None = None,
    memory_format: torch.memory_format | None = None,
    snr_gamma: float | None = None,
    snr_offset: float | None = None,
) -> torch.Tensor:
    """A deterministic evaluation loss: the noise and timestep of row ``i`` depend only on ``(seed, keys[i])``
    (:func:`keyed_noise`; key a sample by its id and caption), so a sample gets the same draw in any batch and on any
    rank and a DDP validation loss equals the single-process one. Without ``keys`` they are drawn from a generator
    seeded ``seed`` (pass a per-batch seed). Give posterior means and un-dropped captions for a noise-free value."""
    kw: dict = {}
    if keys is not None:
        kw["noise"], kw["timesteps"] = keyed_noise(keys, tuple(latents.shape[1:]), seed,
                                                   scheduler.config.num_train_timesteps, latents.device, latents.dtype)
    else:
        kw["generator"] = torch.Generator(device=latents.device).manual_seed(seed)
    return diffusion_loss(unet, latents, text_states, text_mask, scheduler, loss_type, memory_format=memory_format,
                          snr_gamma=snr_gamma, snr_offset=snr_offset, **kw)


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


# Names that moved to the sampler registry (msdm.generators.samplers); kept importable from here.
_MOVED = {"make_sampler": "make_sampler", "sampler_name": "sampler_name", "SAMPLERS": "SAMPLERS"}


def __getattr__(name):
    if name in _MOVED:
        from msdm.generators import samplers

        value = getattr(samplers, _MOVED[name])
        return tuple(value) if name == "SAMPLERS" else value
    raise AttributeError(f"module 'msdm.diffusion' has no attribute {name!r}")
