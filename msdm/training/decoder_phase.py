"""The decoder phase of stage 1: the last steps of a VAE run train the decoder alone, on noisy latents.

Why: the U-Net's latents are never exactly a real frame's. The MSE + SSIM decoder, trained on clean posterior
samples only, amplifies their errors: on real Kvasir frames (64 px, 8 latent channels) decoding real latents plus
Gaussian noise of 10 % of the latent std raised the reconstruction FID from 91 to 131. A decoder that has seen such
noise maps it back towards frames instead — the noise-conditioning augmentation of a cascade's later stage (Ho et
al. 2022, "Cascaded Diffusion Models for High Fidelity Image Generation", §3.2), here for the decoder, the last
stage of a latent diffusion cascade. The encoder is frozen in this phase, so the latents the U-Net is trained on are
those of the joint phase: the phase can follow a finished VAE run (resume it with more steps) and leaves a U-Net
trained on its latents valid. Measured (docs/benchmarks.md, Real frames): 600 decoder steps at lr 1e-4 with noise
up to 0.2 of the latent std took the held-out reconstruction FID from 91 to 77 and the generated FID of the same
U-Net from 157 to 138 (seed 0).
"""

from __future__ import annotations

import torch


def noisy_latents(z: torch.Tensor, max_noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``z`` plus Gaussian noise whose std is, per sample, ``u · max_noise · std(z)`` with ``u ~ U(0, 1)``: every
    noise level from clean latents to ``max_noise`` of the batch's latent std (the scale the U-Net works in, as
    ``latent_scaling: auto`` measures it). ``max_noise = 0`` returns ``z`` unchanged."""
    if max_noise <= 0:
        return z
    u = torch.rand(z.shape[0], *([1] * (z.ndim - 1)), generator=generator, device=z.device, dtype=z.dtype)
    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return z + u * (max_noise * z.detach().std()) * eps


def phase_start(total_steps: int, decoder_steps: int) -> int:
    """The first optimizer step (0-based) of the decoder phase of a run of ``total_steps``."""
    if decoder_steps < 0:
        raise ValueError(f"decoder_steps must be >= 0, got {decoder_steps}")
    if decoder_steps and decoder_steps >= total_steps:
        raise ValueError(f"decoder_steps ({decoder_steps}) must be fewer than the run's steps ({total_steps}): the "
                         "encoder trains first")
    return total_steps - decoder_steps
