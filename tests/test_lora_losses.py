"""min-SNR-γ weighting of the Kandinsky LoRA losses against weights computed by hand from the noise schedule.

The prior predicts x0 (``prediction_type="sample"``): Hang et al. (2023) weight it ``min(SNR, γ)``; the paper's
reference scripts used the ε form ``min(SNR, γ) / SNR``. The decoder predicts ε: both variants are ``min(SNR, γ)/SNR``.
"""

import math

import pytest
import torch
from diffusers import DDPMScheduler, PriorTransformer, UnCLIPScheduler

from msdm.lora.losses import kandinsky_prior_loss, min_snr_weights

GAMMA = 5.0
T = torch.tensor([10, 500, 990])


def cosine_snr(t: int, steps: int = 1000, s: float = 0.008) -> float:
    """SNR = ᾱ/(1 − ᾱ) of the squared-cosine schedule (Nichol & Dhariwal 2021, eq. 17; betas clipped at 0.999 as
    diffusers' ``betas_for_alpha_bar``), by hand."""
    def alpha_bar(x):
        return math.cos((x / steps + s) / (1 + s) * math.pi / 2) ** 2

    prod = 1.0
    for i in range(t + 1):
        prod *= 1.0 - min(1.0 - alpha_bar(i + 1) / alpha_bar(i), 0.999)
    return prod / (1.0 - prod)


def prior_scheduler():
    # the Kandinsky 2.2 prior's UnCLIP schedule, as KandinskyLoRAModule trains with it (prior_noise_schedule="prior")
    unclip = UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
                             clip_sample=True, clip_sample_range=10.0, beta_schedule="squaredcos_cap_v2")
    return DDPMScheduler.from_config(unclip.config)


def test_prior_weights_equal_the_hand_computed_values():
    snr = [cosine_snr(int(t)) for t in T]
    hang = min_snr_weights(prior_scheduler(), T, GAMMA)  # the default
    ref = min_snr_weights(prior_scheduler(), T, GAMMA, variant="reference")
    assert hang.tolist() == pytest.approx([min(v, GAMMA) for v in snr], rel=1e-4)
    assert ref.tolist() == pytest.approx([min(v, GAMMA) / v for v in snr], rel=1e-4)
    # the emphasis the issue found: the reference formula nearly ignores low-noise steps of an x0 model
    assert ref.tolist() == pytest.approx([0.0036, 1.0, 1.0], abs=1e-4)
    assert hang.tolist() == pytest.approx([5.0, 0.9696, 0.0001968], rel=1e-3)


def test_epsilon_and_v_weights_do_not_depend_on_the_variant():
    for kind, denom in (("epsilon", lambda v: v), ("v_prediction", lambda v: v + 1)):
        sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=kind)
        want = [min(v, GAMMA) / denom(v) for v in (cosine_snr(int(t)) for t in T)]
        for variant in ("hang2023", "reference"):
            assert min_snr_weights(sched, T, GAMMA, variant).tolist() == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="variant"):
        min_snr_weights(prior_scheduler(), T, GAMMA, variant="hang")


def test_prior_loss_is_the_mse_times_the_weight_of_its_timestep():
    """One sample: the weighted loss over the unweighted one is the weight of the timestep the generator drew."""
    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=1)
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
    g = torch.Generator().manual_seed(0)
    image, text, states = torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    mask = torch.ones(1, 77)
    sched = prior_scheduler()

    def loss(**kw):
        with torch.no_grad():
            return kandinsky_prior_loss(prior, image, text, states, mask, sched, generator=torch.Generator().manual_seed(1),
                                        **kw).item()

    gen = torch.Generator().manual_seed(1)  # the draws the loss makes: noise [1, 32], then the timestep
    torch.randn(1, 32, generator=gen)
    t = int(torch.randint(0, 1000, (1,), generator=gen))
    snr = cosine_snr(t)
    plain = loss()
    assert loss(snr_gamma=GAMMA) / plain == pytest.approx(min(snr, GAMMA), rel=1e-4)
    assert loss(snr_gamma=GAMMA, snr_variant="reference") / plain == pytest.approx(min(snr, GAMMA) / snr, rel=1e-4)
