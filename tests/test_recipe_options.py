"""The recipe options for real frames: v-prediction, zero terminal SNR, min-SNR-γ weights, and the guidance options
of the pipeline (guidance interval, CFG rescale, autoguidance), each against an independent reference."""

import pytest
import torch

from msdm.diffusion import diffusion_loss, min_snr_weights, training_scheduler
from msdm.models.presets import build_unet
from msdm.testing import build_tiny_pipeline

PROMPTS = ["Generate an image with 2 polyps.", "Generate an image containing a green/black box artefact."]


def _diffusers_example_snr_weights(scheduler, timesteps, gamma):
    # diffusers/examples/text_to_image/train_text_to_image_sdxl.py (compute_snr + the min-SNR block), written out
    alphas_cumprod = scheduler.alphas_cumprod
    sqrt_alphas_cumprod = alphas_cumprod**0.5
    sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod) ** 0.5
    alpha, sigma = sqrt_alphas_cumprod[timesteps].float(), sqrt_one_minus_alphas_cumprod[timesteps].float()
    snr = (alpha / sigma) ** 2
    if scheduler.config.prediction_type == "v_prediction":
        # train_text_to_image_sdxl.py: "Velocity objective requires that we add one to SNR values before we divide"
        snr = snr + 1
    return torch.stack([snr, gamma * torch.ones_like(timesteps, dtype=torch.float)], dim=1).min(dim=1)[0] / snr


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_min_snr_weights_equal_the_diffusers_training_example(pred):
    sched = training_scheduler(pred)
    t = torch.tensor([0, 1, 10, 100, 300, 500, 700, 900, 998])
    torch.testing.assert_close(min_snr_weights(sched, t, 5.0), _diffusers_example_snr_weights(sched, t, 5.0),
                               rtol=1e-5, atol=1e-7)


def test_v_weights_keep_the_pure_noise_step():
    # with zero terminal SNR the last step still trains (weight 1), the low-noise steps are capped
    w = min_snr_weights(training_scheduler("v_prediction", zero_terminal_snr=True), torch.tensor([0, 999]), 5.0)
    assert float(w[1]) == 1.0 and float(w[0]) < 0.011


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("offset", [0.0, 0.3, 1.0])
def test_snr_offset_is_an_x0_weight_min_snr_plus_offset(pred, offset):
    # every objective is an x0 loss times a weight (eps: SNR, v: SNR + 1); the weighted loss must weigh x0 by
    # min(SNR + offset, gamma) whatever the objective; offset 0 for v is Hang et al.'s form, 1 the SDXL form
    sched = training_scheduler(pred, zero_terminal_snr=pred == "v_prediction")
    t = torch.tensor([0, 100, 300, 500, 700, 900, 998])
    a = sched.alphas_cumprod[t].double()
    snr = a / (1 - a)
    objective_x0_weight = snr + 1 if pred == "v_prediction" else snr
    got = min_snr_weights(sched, t, 5.0, offset).double() * objective_x0_weight
    torch.testing.assert_close(got, torch.minimum(snr + offset, torch.tensor(5.0, dtype=torch.float64)),
                               rtol=1e-5, atol=1e-6)
    if offset == (1.0 if pred == "v_prediction" else 0.0):  # the defaults are unchanged
        torch.testing.assert_close(min_snr_weights(sched, t, 5.0, offset), min_snr_weights(sched, t, 5.0))


def test_scheduler_overrides_reach_the_training_scheduler_and_the_export(tmp_path, tiny_text_encoder):
    import json

    from conftest import save_tiny_vae

    from lightning_modules import MSDMUNetModule

    vae = save_tiny_vae(tmp_path / "vae.ckpt", seed=0)
    module = MSDMUNetModule(preset="tiny", vae=vae, text_encoder=tiny_text_encoder, max_length=16, image_size=32,
                            prediction_type="v_prediction", zero_terminal_snr=True,
                            scheduler_overrides={"beta_start": 0.00085, "beta_end": 0.012})
    assert module.scheduler.config.beta_start == 0.00085 and module.scheduler.config.beta_end == 0.012
    assert float(module.scheduler.alphas_cumprod[-1]) == 0.0  # zero terminal SNR still applies on top
    module.export(str(tmp_path / "p"))
    cfg = json.loads((tmp_path / "p" / "scheduler" / "scheduler_config.json").read_text())
    assert cfg["beta_start"] == 0.00085 and cfg["beta_end"] == 0.012 and cfg["rescale_betas_zero_snr"]


def test_zero_terminal_snr_reaches_pure_noise_and_needs_v():
    assert float(training_scheduler().alphas_cumprod[-1]) > 5e-5  # the paper's schedule: ᾱ_T = 7.5e-5
    z = training_scheduler("v_prediction", zero_terminal_snr=True)
    assert float(z.alphas_cumprod[-1]) == 0.0 and z.config.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="v_prediction"):
        training_scheduler("epsilon", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="prediction_type"):
        training_scheduler("sample")


def test_weighted_loss_is_the_weighted_mean_of_per_sample_losses():
    torch.manual_seed(0)
    unet = build_unet("tiny", text_embed_dim=8)
    sched = training_scheduler("v_prediction", zero_terminal_snr=True)
    lat, states, mask = torch.randn(3, 4, 8, 8), torch.randn(3, 2, 8), torch.ones(3, 2)
    noise, t = torch.randn(3, 4, 8, 8), torch.tensor([5, 400, 999])
    with torch.no_grad():
        got = diffusion_loss(unet, lat, states, mask, sched, "mse", noise=noise, timesteps=t, snr_gamma=5.0)
        pred = unet(sched.add_noise(lat, noise, t), t, states, mask).sample
        target = sched.get_velocity(lat, noise, t)  # v = √ᾱ ε − √(1−ᾱ) x₀
        ac = sched.alphas_cumprod[t]
        torch.testing.assert_close(target, ac.sqrt().view(-1, 1, 1, 1) * noise - (1 - ac).sqrt().view(-1, 1, 1, 1) * lat)
        per = ((pred - target) ** 2).mean(dim=(1, 2, 3))
        want = (per * _diffusers_example_snr_weights(sched, t, 5.0)).mean()
    torch.testing.assert_close(got, want)


@pytest.fixture
def pipe(tiny_text_encoder):
    return build_tiny_pipeline(tiny_text_encoder)


def _run(p, **kw):
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    return p(PROMPTS, num_images_per_prompt=2, num_inference_steps=6, generator=g, output_type="pt", **kw).images


def test_guidance_interval_limits_and_all_steps_equal_plain_cfg(pipe):
    cfg = _run(pipe, guidance_scale=4.0)
    torch.testing.assert_close(_run(pipe, guidance_scale=4.0, guidance_interval=(0, 999)), cfg, atol=0, rtol=0)
    # an interval no timestep falls in is no guidance at all (one conditional pass per step)
    torch.testing.assert_close(_run(pipe, guidance_scale=4.0, guidance_interval=(-2, -1)),
                               _run(pipe, guidance_scale=1.0), atol=1e-6, rtol=0)
    part = _run(pipe, guidance_scale=4.0, guidance_interval=(200, 700))
    assert (part - cfg).abs().max() > 1e-4 and (part - _run(pipe, guidance_scale=1.0)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="lo <= hi"):
        _run(pipe, guidance_interval=(700, 200))


def test_guidance_interval_is_saved_with_the_folder(pipe, tmp_path):
    from msdm.pipeline import MSDMPipeline

    pipe.register_to_config(guidance_interval=(200.0, 700.0))
    pipe.save_pretrained(tmp_path / "p")
    loaded = MSDMPipeline.from_pretrained(tmp_path / "p")
    assert tuple(loaded.config.guidance_interval) == (200.0, 700.0)
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(loaded, guidance_scale=4.0),
                               _run(pipe, guidance_scale=4.0, guidance_interval=(200, 700)), atol=0, rtol=0)


def test_autoguidance_against_itself_is_the_conditional_model_and_a_weaker_model_moves_it(pipe):
    import copy

    cond = _run(pipe, guidance_scale=1.0)
    # bad + s·(good − bad) with bad == good is good: same images as no guidance
    torch.testing.assert_close(_run(pipe, guidance_scale=3.0, guide_unet=pipe.unet), cond, atol=1e-5, rtol=0)
    weaker = copy.deepcopy(pipe.unet)
    with torch.no_grad():
        for p in weaker.parameters():
            p.mul_(0.7)
    auto = _run(pipe, guidance_scale=3.0, guide_unet=weaker)
    assert (auto - cond).abs().max() > 1e-4


def test_guidance_rescale_zero_is_a_no_op_and_one_matches_the_conditional_std(pipe):
    base = _run(pipe, guidance_scale=6.0)
    torch.testing.assert_close(_run(pipe, guidance_scale=6.0, guidance_rescale=0.0), base, atol=0, rtol=0)
    assert (_run(pipe, guidance_scale=6.0, guidance_rescale=0.7) - base).abs().max() > 1e-4


@pytest.mark.parametrize("stage, config", [("unet", "msdm_unet_kvasir_seg.yaml"), ("vae", "msdm_vae_kvasir_seg.yaml")])
def test_the_kvasir_seg_configs_train_msdms_recipe(stage, config):
    # the shipped real-frame configs and msdm.training.recipes["msdm"] (what the quickstart and the bench measure)
    # must not drift apart: every setting the recipe fixes is the config's
    import yaml

    from msdm.testing import repo_root
    from msdm.training.recipes import get_recipe

    recipe = get_recipe("msdm")
    args = yaml.safe_load((repo_root() / "configs" / config).read_text())["model"]["init_args"]
    for key, value in recipe[stage].items():
        assert args.get(key) == value, f"{config}: {key} = {args.get(key)!r}, the msdm recipe has {value!r}"


@pytest.mark.parametrize("betas", [(0.002, 0.02), (0.00085, 0.012), (0.0005, 0.006)])
def test_dpm_sde_on_a_zero_snr_schedule_spends_its_steps_across_the_noise_levels(betas):
    # Karras sigmas from diffusers' zero-SNR sigma_max (4096) put half of 20 steps at t >= 997 (timesteps 999, 998,
    # 998, ...) and crashed the solver on the 0.0005-0.006 range; under zero terminal SNR dpm++sde uses linspace
    from msdm.generators.samplers import make_sampler

    sched = make_sampler("dpm++sde", dict(training_scheduler("v_prediction", True, beta_start=betas[0],
                                                             beta_end=betas[1]).config))
    sched.set_timesteps(20)
    t = sched.timesteps.tolist()
    assert len(set(t)) == 20 and t[0] == 999 and t[0] - t[1] > 40 and sum(x >= 900 for x in t) <= 3
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    for step in sched.timesteps:  # the whole solve runs (it raised IndexError before)
        x = sched.step(0.1 * x, step, x, generator=torch.Generator().manual_seed(int(step))).prev_sample
    assert torch.isfinite(x).all()
    plain = make_sampler("dpm++sde", dict(training_scheduler("epsilon").config))  # the paper's schedule keeps Karras
    assert plain.config.use_karras_sigmas


def test_the_unet_ignores_all_padding_token_columns():
    # Stage2.training_loss drops the token columns that are padding in every row (cheaper cross-attention); exact
    # because the U-Net gives padding a -1e4 key bias and pools the masked mean: same output with and without them
    torch.manual_seed(0)
    unet = build_unet("tiny", text_embed_dim=8).eval()
    x, t = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 990])
    states, mask = torch.randn(3, 7, 8), torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0],
                                                       [1, 1, 1, 1, 1, 0, 0]])
    keep = mask.bool().any(0)
    with torch.no_grad():
        full = unet(x, t, states * mask.unsqueeze(-1), mask).sample
        trimmed = unet(x, t, (states * mask.unsqueeze(-1))[:, keep], mask[:, keep]).sample
        garbage = unet(x, t, torch.where(mask.bool().unsqueeze(-1), states, torch.randn(3, 7, 8) * 5), mask).sample
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(garbage, full, rtol=1e-5, atol=1e-5)  # padding states do not matter at all
