"""Training objectives of the three LoRA-tuned models, on pre-computed conditioning.

Each function draws its noise and timesteps from an explicit ``torch.Generator`` (when given), so a training step
is a pure function of (weights, batch, generator seed): a run resumed from a checkpoint draws the same noise as an
uninterrupted one.

- Kandinsky 2.2 **prior** (reference ``kandinsky2_prior_lora_train.py``): the PriorTransformer denoises the CLIP
  *image* embedding of the target image, normalised with the prior's ``clip_mean`` / ``clip_std``, conditioned on
  the CLIP text embedding (``proj_embedding``) and token states; the target is x0 (``prediction_type="sample"``).
- Kandinsky 2.2 **decoder** (reference ``kandinsky2_decoder_lora_train.py``): the U-Net denoises MoVQ latents
  conditioned on the CLIP image embedding of the same image (``added_cond_kwargs={"image_embeds": ...}``);
  target epsilon on the first 4 output channels (the other 4 are the learned variance).
- **FLUX** (diffusers ``train_dreambooth_lora_flux.py``): rectified flow ``x_t = (1 - s) x0 + s eps``, target
  ``eps - x0``; timesteps from ``compute_density_for_timestep_sampling`` and loss weights from
  ``compute_loss_weighting_for_sd3``; latents packed / unpacked and image ids built by the pipeline's own helpers.

Both Kandinsky losses take an optional min-SNR-γ weighting (:func:`min_snr_weights`, two named variants):

- ``"hang2023"`` (default): Hang et al. 2023, *Efficient Diffusion Training via Min-SNR Weighting Strategy* (ICCV),
  written for the model's own target: ``min(SNR, γ)`` for x0-prediction, ``min(SNR, γ) / SNR`` for ε-prediction,
  ``min(SNR, γ) / (SNR + 1)`` for v-prediction — what diffusers' ``train_text_to_image_prior.py`` and
  ``train_text_to_image.py`` do. For the x0-predicting prior it caps the weight of the *noisy* end (small SNR keeps
  weight SNR) and gives every clean-ish step weight γ.
- ``"reference"``: the Prompt to Polyp team's ``kandinsky2_prior_lora_train.py`` / ``..._decoder_lora_train.py``,
  which use the ε-prediction form ``min(SNR, γ) / SNR`` whatever the target (``/ (SNR + 1)`` for v). For the x0
  prior that is the opposite emphasis: weights 0.0036 / 1 / 1 at t = 10 / 500 / 990 (γ = 5, the prior's cosine
  schedule) against 5 / 0.97 / 0.0002 for Hang et al. Kept to reproduce the paper's runs.

For the ε-predicting decoder both variants are the same weight. SNR comes from diffusers' ``compute_snr``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=torch.float32).to(like.dtype)


def _timesteps(num_train_timesteps: int, batch: int, device, generator) -> torch.Tensor:
    return torch.randint(0, num_train_timesteps, (batch,), device=device, generator=generator).long()


MIN_SNR_VARIANTS = ("hang2023", "reference")


def min_snr_weights(noise_scheduler, timesteps: torch.Tensor, snr_gamma: float,
                    variant: str = "hang2023") -> torch.Tensor:
    """Per-sample min-SNR-γ weights for the scheduler's ``prediction_type`` (module docstring for the variants)."""
    from diffusers.training_utils import compute_snr

    if variant not in MIN_SNR_VARIANTS:
        raise ValueError(f"min-SNR variant must be one of {MIN_SNR_VARIANTS}, got {variant!r}")
    snr = compute_snr(noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=snr_gamma)
    kind = noise_scheduler.config.prediction_type
    if kind == "v_prediction":
        return clipped / (snr + 1)
    if kind == "sample" and variant == "hang2023":
        return clipped  # Hang et al. 2023: the x0 loss weighted min(SNR, γ)
    return clipped / snr  # ε-prediction (both variants); x0 under the reference scripts' formula


def _reduce(per_elem: torch.Tensor, noise_scheduler, timesteps, snr_gamma: float | None,
            snr_variant: str = "hang2023") -> torch.Tensor:
    per_sample = per_elem.mean(dim=list(range(1, per_elem.ndim)))
    if snr_gamma is not None and snr_gamma > 0:
        per_sample = per_sample * min_snr_weights(noise_scheduler, timesteps, snr_gamma, snr_variant)
    return per_sample.mean()


def kandinsky_prior_loss(
    prior,
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_hidden_states: torch.Tensor,
    text_mask: torch.Tensor,
    noise_scheduler,
    generator: torch.Generator | None = None,
    snr_gamma: float | None = None,
    snr_variant: str = "hang2023",
) -> torch.Tensor:
    """MSE between the prior's x0 prediction and the normalised CLIP image embedding ``[B, D]``, optionally
    min-SNR-γ weighted (``snr_variant``: ``"hang2023"`` or the paper's ``"reference"``, see the module docstring)."""
    dtype = next(p for n, p in prior.named_parameters() if "lora_" not in n).dtype
    target = ((image_embeds.float() - prior.clip_mean.float()) / prior.clip_std.float())
    noise = _randn(target.shape, target, generator)
    t = _timesteps(noise_scheduler.config.num_train_timesteps, target.shape[0], target.device, generator)
    noisy = noise_scheduler.add_noise(target, noise, t)
    pred = prior(
        noisy.to(dtype),
        timestep=t,
        proj_embedding=text_embeds.to(dtype),
        encoder_hidden_states=text_hidden_states.to(dtype),
        attention_mask=text_mask.bool(),
    ).predicted_image_embedding
    return _reduce(F.mse_loss(pred.float(), target, reduction="none"), noise_scheduler, t, snr_gamma, snr_variant)


def kandinsky_decoder_loss(
    unet,
    latents: torch.Tensor,
    image_embeds: torch.Tensor,
    noise_scheduler,
    generator: torch.Generator | None = None,
    snr_gamma: float | None = None,
    snr_variant: str = "hang2023",
) -> torch.Tensor:
    """MSE between the U-Net's epsilon prediction (channels 0-3) and the noise added to MoVQ ``latents``."""
    dtype = next(p for n, p in unet.named_parameters() if "lora_" not in n).dtype
    latents = latents.float()
    noise = _randn(latents.shape, latents, generator)
    t = _timesteps(noise_scheduler.config.num_train_timesteps, latents.shape[0], latents.device, generator)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    pred = unet(noisy.to(dtype), t, encoder_hidden_states=None,
                added_cond_kwargs={"image_embeds": image_embeds.to(dtype)}).sample[:, :4]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    return _reduce(F.mse_loss(pred.float(), target, reduction="none"), noise_scheduler, t, snr_gamma, snr_variant)


# --------------------------------------------------------------------------------------------------------------
# FLUX: rectified flow matching
# --------------------------------------------------------------------------------------------------------------


def flux_latents(latent_dist_sample: torch.Tensor, vae_config) -> torch.Tensor:
    """VAE latents -> the transformer's space: ``(z - shift_factor) * scaling_factor`` (FluxPipeline inverts this)."""
    return (latent_dist_sample - vae_config.shift_factor) * vae_config.scaling_factor


def flux_sample_timesteps(
    noise_scheduler,
    batch_size: int,
    device,
    weighting_scheme: str = "none",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(timesteps, sigmas)`` as in diffusers' FLUX LoRA script: ``u`` from the weighting scheme indexes the
    scheduler's training grid (``timesteps[i]``, ``sigmas[i]``; with dynamic shifting that grid is unshifted)."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    u = compute_density_for_timestep_sampling(
        weighting_scheme=weighting_scheme, batch_size=batch_size, logit_mean=logit_mean, logit_std=logit_std,
        mode_scale=mode_scale, device=device, generator=generator,
    )
    n = noise_scheduler.config.num_train_timesteps
    idx = (u * n).long().clamp(0, n - 1).cpu()
    timesteps = noise_scheduler.timesteps[idx].to(device)
    sigmas = noise_scheduler.sigmas[idx].to(device=device, dtype=torch.float32)
    return timesteps, sigmas


def flux_flow_matching_loss(
    transformer,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    noise_scheduler,
    guidance_scale: float | None = 1.0,
    weighting_scheme: str = "none",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Weighted MSE between the predicted velocity and ``noise - latents`` for shifted/scaled VAE ``latents``
    ``[B, C, h, w]`` (``h``, ``w`` even) and T5 / pooled-CLIP embeddings.

    ``guidance_scale`` is fed to the guidance embedding of guidance-distilled models (FLUX.1-dev); it is ignored for
    models without one (FLUX.1-schnell). See docs/lora.md for the value to train with (diffusers#11181).
    """
    from diffusers import FluxPipeline

    dtype = next(p for n, p in transformer.named_parameters() if "lora_" not in n).dtype
    b, c, h, w = latents.shape
    x0 = latents.float()
    noise = _randn(x0.shape, x0, generator)
    timesteps, sigmas = flux_sample_timesteps(
        noise_scheduler, b, x0.device, weighting_scheme, logit_mean, logit_std, mode_scale, generator
    )
    s = sigmas.view(b, 1, 1, 1)
    noisy = (1.0 - s) * x0 + s * noise

    packed = FluxPipeline._pack_latents(noisy.to(dtype), b, c, h, w)
    # Position ids of the 2x2-packed latent grid, exactly as FluxPipeline.prepare_latents builds them.
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x0.device, dtype)
    txt_ids = torch.zeros(prompt_embeds.shape[1], 3, device=x0.device, dtype=dtype)
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((b,), float(guidance_scale), device=x0.device, dtype=torch.float32)

    pred = transformer(
        hidden_states=packed,
        # The transformer multiplies by 1000 internally; the pipeline passes t / 1000 too.
        timestep=(timesteps / 1000).to(dtype),
        guidance=guidance,
        pooled_projections=pooled_prompt_embeds.to(dtype),
        encoder_hidden_states=prompt_embeds.to(dtype),
        txt_ids=txt_ids,
        img_ids=img_ids,
        return_dict=False,
    )[0]
    # _unpack_latents takes the *pixel* size and the VAE factor; with factor 1, pixel size = latent size.
    pred = FluxPipeline._unpack_latents(pred, height=h, width=w, vae_scale_factor=1)

    from diffusers.training_utils import compute_loss_weighting_for_sd3

    weighting = compute_loss_weighting_for_sd3(weighting_scheme=weighting_scheme, sigmas=s)
    target = noise - x0
    per_sample = (weighting.float() * (pred.float() - target) ** 2).reshape(b, -1).mean(dim=1)
    return per_sample.mean()
