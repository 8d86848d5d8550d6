"""MSDM VAE and U-Net: preset sizes, shapes, masks, initialisation."""

import pytest
import torch

from msdm.models.presets import PRESETS, build_unet, build_vae, count_parameters, get_preset, preset_parameter_table


def test_paper_preset_parameter_counts_match_the_reference():
    rows = {r["preset"]: r for r in preset_parameter_table(use_cache=False)}
    # Prompt to Polyp reference code: VAE 13.37 M; U-Net 326.5 M with CLIP ViT-L/14 (768-d text)
    assert abs(rows["paper"]["vae"] / 13.37e6 - 1) < 0.01
    assert abs(rows["paper"]["unet"] / 326.5e6 - 1) < 0.02
    assert rows["small"]["unet"] < rows["paper"]["unet"] / 10
    assert set(rows) == set(PRESETS)


def test_the_cached_preset_table_is_what_the_models_count():
    """msdm presets prints msdm/assets/preset_parameters.json (no torch/diffusers import); it must be the live count
    (after changing a preset or a model: python -m msdm.models.presets)."""
    assert preset_parameter_table() == preset_parameter_table(use_cache=False)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="paper"):
        get_preset("huge")


def test_vae_shapes_and_deep_supervision_head():
    torch.manual_seed(0)
    vae = build_vae("tiny")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = vae(x)
    f = vae.downscale_factor
    assert out.sample.shape == x.shape
    assert [d.shape for d in out.deep_supervision] == [torch.Size([2, 3, 16, 16])]  # half resolution
    assert out.posterior.mean.shape == (2, vae.config.latent_channels, 32 // f, 32 // f)
    # encode/decode API mirrors diffusers' AutoencoderKL
    z = vae.encode(x).latent_dist.mode()
    assert vae.decode(z).sample.shape == x.shape


def test_vae_paper_factor_and_latents():
    with torch.device("meta"):
        vae = build_vae("paper")
    assert vae.downscale_factor == 8 and vae.config.latent_channels == 8


def test_vae_posterior_log_variance_is_clamped():
    vae = build_vae("tiny")
    with torch.no_grad():
        vae.enc_out[1].bias.fill_(1e3)  # huge log-variance pre-activation
        vae.enc_out[1].weight.zero_()
    with torch.no_grad():
        post = vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist
    assert float(post.logvar.max()) == pytest.approx(20.0)


@pytest.fixture
def tiny_unet():
    torch.manual_seed(0)
    unet = build_unet("tiny", text_embed_dim=12)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.2)  # the output conv starts at zero; make outputs visible
    return unet.eval()


def test_unet_output_shape_and_zero_initialised_output():
    unet = build_unet("tiny", text_embed_dim=12)
    x = torch.randn(3, 4, 16, 16)
    out = unet(x, torch.tensor([0, 10, 999]), torch.randn(3, 7, 12), torch.ones(3, 7)).sample
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised conv_out (reference: zero_module(outc))


def test_unet_ignores_padding_tokens(tiny_unet):
    x, t = torch.randn(2, 4, 16, 16), torch.tensor([5, 500])
    states = torch.randn(2, 7, 12)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]])
    changed = states.clone()
    changed[mask == 0] = torch.randn(int((mask == 0).sum()), 12) * 10
    a = tiny_unet(x, t, states, mask).sample
    b = tiny_unet(x, t, changed, mask).sample
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # ...while real tokens matter
    real_changed = states.clone()
    real_changed[:, 0] += 1.0
    assert (tiny_unet(x, t, real_changed, mask).sample - a).abs().max() > 1e-4


def test_unet_depends_on_timestep_and_text(tiny_unet):
    x, s, m = torch.randn(1, 4, 16, 16), torch.randn(1, 5, 12), torch.ones(1, 5)
    a = tiny_unet(x, torch.tensor([10]), s, m).sample
    assert (tiny_unet(x, torch.tensor([900]), s, m).sample - a).abs().max() > 1e-4
    assert (tiny_unet(x, torch.tensor([10]), torch.randn(1, 5, 12), m).sample - a).abs().max() > 1e-4


def test_unet_gradient_checkpointing_gives_the_same_gradients(tiny_unet):
    x, t, s, m = torch.randn(2, 4, 16, 16), torch.tensor([3, 7]), torch.randn(2, 5, 12), torch.ones(2, 5)
    tiny_unet.train()
    tiny_unet(x, t, s, m).sample.square().mean().backward()
    g1 = [p.grad.clone() for p in tiny_unet.parameters()]
    tiny_unet.zero_grad()
    tiny_unet.enable_gradient_checkpointing()
    tiny_unet(x, t, s, m).sample.square().mean().backward()
    for a, p in zip(g1, tiny_unet.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-6, rtol=1e-5)


def test_count_parameters_on_meta_matches_real():
    unet_real = build_unet("tiny", text_embed_dim=12)
    with torch.device("meta"):
        unet_meta = build_unet("tiny", text_embed_dim=12)
    assert count_parameters(unet_real) == count_parameters(unet_meta)
