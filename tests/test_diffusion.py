"""Noise schedule, samplers, CFG dropout and the training loss."""

import numpy as np
import pytest
import torch

from msdm.diffusion import (
    diffusion_loss,
    drop_captions,
    guidance_from_reference,
    training_scheduler,
)
from msdm.generators.samplers import make_sampler, sampler_name
from msdm.models.presets import build_unet


def test_training_schedule_is_the_references_scaled_linear():
    s = training_scheduler()
    # reference GaussianNoiseScheduler(schedule_strategy='scaled_linear'): linspace(sqrt(b0), sqrt(b1), T) ** 2
    ref = np.linspace(0.002**0.5, 0.02**0.5, 1000) ** 2
    np.testing.assert_allclose(s.betas.numpy(), ref, rtol=1e-5)
    assert s.config.prediction_type == "epsilon"


def test_ddim_uses_the_reference_timesteps():
    ddim = make_sampler("ddim")
    ddim.set_timesteps(150)
    # reference denoise(): torch.linspace(0, T-1, steps).long(), walked in reverse
    ref = torch.linspace(0, 999, 150, dtype=torch.float64).round().long().flip(0)
    assert torch.equal(ddim.timesteps.long(), ref)


@pytest.mark.parametrize("name", ["ddim", "dpm++", "ddpm", "euler"])
def test_samplers_share_the_training_schedule(name):
    s = make_sampler(name)
    assert sampler_name(s) == name
    np.testing.assert_allclose(s.betas.numpy(), training_scheduler().betas.numpy())


def test_unknown_sampler():
    with pytest.raises(ValueError, match="dpm"):
        make_sampler("plms")


def test_cfg_dropout_is_per_sample_at_the_configured_rate():
    g = torch.Generator().manual_seed(0)
    caps = [f"prompt {i}" for i in range(64)]
    rates, mixed = [], 0
    for _ in range(200):
        new, drop = drop_captions(caps, 0.2, g)
        assert all((c == "") == bool(d) for c, d in zip(new, drop))
        assert all(c == o for c, o, d in zip(new, caps, drop) if not d)
        rates.append(drop.float().mean().item())
        mixed += 0 < drop.sum() < len(caps)  # some dropped and some kept in the same batch
    assert abs(np.mean(rates) - 0.2) < 0.01
    assert mixed == 200


def test_guidance_convention_mapping():
    # reference: (s + 1) * cond - s * uncond ; diffusers: uncond + s' * (cond - uncond)
    cond, uncond = torch.randn(5), torch.randn(5)
    s = 3.5
    ref = (s + 1) * cond - s * uncond
    ours = uncond + guidance_from_reference(s) * (cond - uncond)
    torch.testing.assert_close(ref, ours)
    assert guidance_from_reference(3.5) == 4.5


def test_diffusion_loss_falls_when_overfitting_fixed_latents():
    torch.manual_seed(0)
    unet = build_unet("tiny", text_embed_dim=8)
    sched = training_scheduler()
    latents, states, mask = torch.randn(4, 4, 8, 8), torch.randn(4, 3, 8), torch.ones(4, 3)
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)

    def eval_loss():
        with torch.no_grad():
            return np.mean([diffusion_loss(unet, latents, states, mask, sched, "mse",
                                           torch.Generator().manual_seed(k)).item() for k in range(8)])

    before = eval_loss()
    for _ in range(60):
        loss = diffusion_loss(unet, latents, states, mask, sched, "mse", g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.8 * before, (before, after)


def test_loss_type_validation():
    unet = build_unet("tiny", text_embed_dim=8)
    with pytest.raises(ValueError, match="l1"):
        diffusion_loss(unet, torch.randn(1, 4, 8, 8), torch.randn(1, 2, 8), None, training_scheduler(), "huber")
