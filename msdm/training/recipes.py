"""Training recipes of small MSDM on real frames: the paper's reference and msdm's measured default, as data.

A recipe is the settings of both stages that are not the data or the budget: :class:`~lightning_modules.MSDMVAEModule`
and :class:`~lightning_modules.MSDMUNetModule` arguments, batch sizes and how many true facts a training caption
joins. ``msdm quickstart`` and ``bench/real_kvasir.py`` read them from here; docs/benchmarks.md ("Real frames") has
the measurements behind every value of ``msdm`` (3 seeds, FID against held-out real frames, paired adherence).

* ``paper`` — Prompt to Polyp §4.2.1 and its code (MMCP / Medfusion defaults), unchanged: VAE lr 1e-4 with 4 latent
  channels, ε-prediction on the scaled-linear schedule, L1, lr 1e-4, no EMA, one caption per image per step, 64 text
  tokens, DDIM η = 1, guidance 4.5 (the reference's 3.5).
* ``msdm`` — the measured choice on 698 real Kvasir-SEG frames at 64 px (follows the box prompt; docs/benchmarks.md has its 3-seed figures): an 8-channel latent trained at lr 1e-3 (the VAE
  bounds every later figure: reconstruction FID 94 vs 109 for 4 channels at 1 200 steps), then a **decoder phase**
  of 600 steps at lr 1e-4 on latents with noise up to 0.4 of their std, encoder frozen
  (:mod:`msdm.training.decoder_phase`; seed 0, same U-Net: generated FID 157 → 133), v-prediction with zero
  terminal SNR (Lin et al. 2024) on Stable Diffusion's less noisy beta range (0.00085–0.012 instead of the paper's
  0.002–0.02, under which half the training steps see a 16×16 latent at SNR < 0.1), min-SNR-5 weights as the x₀
  weight ``min(SNR + 0.1, 5)`` (:func:`msdm.diffusion.min_snr_weights`: Hang et al.'s form plus a small weight at
  high noise, where the layout a prompt asks for is decided), MSE, lr 1e-3 with warm-up, EMA 0.995, captions joining
  up to 8 true facts (128 tokens, encoded sentence by sentence), SDE-DPM-Solver++ with **autoguidance** at weight 2:
  the run's own EMA weights at half of training guide sampling in place of the unconditional branch (Karras et al.
  2024; on one seed at 4 000 U-Net steps FID 145 against 157 for CFG 1.5, box gap 1.00 for both). On one seed and
  one VAE (``bench/real_kvasir_variants.py``) the schedule and the weights took FID from 261 to 210 with the box gap
  at 1.00. Budgets much shorter than the bench's 4 000 U-Net steps (the quickstart's 2 000) keep classifier-free
  guidance 1.5: there the half-trained guide still lacks the prompt (seed 0: box gap 0.69 against 0.81).
"""

from __future__ import annotations

import copy

RECIPES: dict[str, dict] = {
    "paper": {
        "vae": {"preset": "small", "lr": 1e-4},
        "vae_batch_size": 8,
        "unet": {"preset": "small", "lr": 1e-4, "loss_type": "l1", "ema_decay": None, "prediction_type": "epsilon",
                 "max_length": 64, "text_chunking": "none", "latent_scaling": None, "sampler": "ddim",
                 "num_inference_steps": 150, "eta": 1.0, "guidance_scale": 4.5},
        "batch_size": 8,
        "caption_facts": 1,
    },
    "msdm": {
        "vae": {"preset": "small", "lr": 1e-3, "vae_overrides": {"latent_channels": 8},
                "decoder_steps": 600, "decoder_lr": 1e-4, "decoder_noise": 0.4},
        "vae_batch_size": 8,
        "unet": {"preset": "small", "unet_overrides": {"in_channels": 8, "out_channels": 8}, "lr": 1e-3,
                 "lr_warmup_steps": 100, "loss_type": "mse", "ema_decay": 0.995,
                 "prediction_type": "v_prediction", "zero_terminal_snr": True,
                 "scheduler_overrides": {"beta_start": 0.00085, "beta_end": 0.012}, "snr_gamma": 5.0,
                 "snr_offset": 0.1,
                 "max_length": 128, "text_chunking": "sentence", "latent_scaling": "auto", "sampler": "dpm++sde",
                 "num_inference_steps": 20, "guidance_scale": 2.0, "autoguidance": 0.5},
        "batch_size": 8,
        "caption_facts": 8,
    },
}


def vae_fit_steps(recipe: dict, joint_steps: int) -> int:
    """The VAE run's ``max_steps``: ``joint_steps`` of encoder and decoder, then the recipe's decoder phase
    (``decoder_steps``, :mod:`msdm.training.decoder_phase`) on top."""
    return int(joint_steps) + int(recipe["vae"].get("decoder_steps", 0))


def get_recipe(name: str) -> dict:
    """A deep copy of recipe ``name`` (callers may edit it)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {tuple(RECIPES)}")
    return copy.deepcopy(RECIPES[name])
