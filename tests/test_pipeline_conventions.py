"""MSDMPipeline follows diffusers' pipeline conventions where they apply: the checks of diffusers' common pipeline
tests (PipelineTesterMixin / PipelineFromPipeTesterMixin), written here for MSDM's own components: folders saved
with .bin weights load, from_pipe keeps the models, embeddings without their masks are refused, the VAE slices and
tiles, the U-Net has the attention-processor API (and attention slicing really slices), AutoPipeline finds it."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from msdm.pipeline import MSDMPipeline
from msdm.testing import build_tiny_pipeline

PROMPTS = ["Generate an image with 2 polyps.", "Generate an image containing a green/black box artefact."]


@pytest.fixture
def pipe(tiny_text_encoder):
    return build_tiny_pipeline(tiny_text_encoder)


def _run(p, steps=4, **kw):
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    return p(PROMPTS, num_images_per_prompt=2, num_inference_steps=steps, generator=g, output_type="pt", **kw).images


# ---------------------------------------------------------------- save / load
def test_a_folder_saved_with_bin_weights_loads(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p", safe_serialization=False)
    for part in ("unet", "vae"):  # (transformers writes safetensors for the text encoder either way)
        assert list((tmp_path / "p" / part).glob("*.bin")) and not list((tmp_path / "p" / part).glob("*.safetensors"))
    loaded = MSDMPipeline.from_pretrained(tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(loaded), _run(pipe), atol=0, rtol=0)
    from diffusers import DiffusionPipeline

    assert type(DiffusionPipeline.from_pretrained(tmp_path / "p")) is MSDMPipeline


def test_autopipeline_for_text2image_loads_an_msdm_folder(pipe, tmp_path):
    from diffusers import AutoPipelineForText2Image

    pipe.save_pretrained(tmp_path / "p")
    auto = AutoPipelineForText2Image.from_pretrained(tmp_path / "p")
    assert type(auto) is MSDMPipeline
    auto.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(auto), _run(pipe), atol=0, rtol=0)


def test_components_are_the_init_arguments(pipe):
    # guide_unet: autoguidance's weaker U-Net, an optional component (None unless a run trained one)
    assert set(pipe.components) == {"vae", "unet", "text_encoder", "tokenizer", "scheduler", "guide_unet"}
    assert pipe.guide_unet is None
    again = MSDMPipeline(**pipe.components, resolution=pipe.config.resolution)
    again.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(again), _run(pipe), atol=0, rtol=0)


# ---------------------------------------------------------------- from_pipe
def test_from_pipe_keeps_every_component_and_the_output(pipe):
    other = MSDMPipeline.from_pipe(pipe)
    for name, component in pipe.components.items():
        assert getattr(other, name) is component, name  # shared, not reloaded or dropped
    assert other.config.resolution == pipe.config.resolution
    other.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(other), _run(pipe), atol=0, rtol=0)
    # a component passed in replaces the original one, the others stay shared
    from msdm.diffusion import make_sampler

    swapped = MSDMPipeline.from_pipe(pipe, scheduler=make_sampler("dpm++sde"))
    assert swapped.unet is pipe.unet and swapped.vae is pipe.vae and type(swapped.scheduler).__name__ != "DDIMScheduler"


# ---------------------------------------------------------------- embeddings
def test_embeddings_without_their_mask_are_refused(pipe):
    pe, pm, ne, nm = pipe.encode_prompt(PROMPTS, num_images_per_prompt=1)
    with pytest.raises(ValueError, match="prompt_attention_mask.*encode_prompt"):
        pipe(prompt_embeds=pe, num_inference_steps=2)
    with pytest.raises(ValueError, match="negative_prompt_attention_mask"):
        pipe(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne, num_inference_steps=2)
    # the padding really matters: attending to every token gives other images than the mask does
    g = [torch.Generator().manual_seed(i) for i in range(2)]
    masked = pipe(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
                  negative_prompt_attention_mask=nm, num_inference_steps=3, generator=g, output_type="pt").images
    g = [torch.Generator().manual_seed(i) for i in range(2)]
    ones = pipe(prompt_embeds=pe, prompt_attention_mask=torch.ones_like(pm), negative_prompt_embeds=ne,
                negative_prompt_attention_mask=torch.ones_like(nm), num_inference_steps=3, generator=g,
                output_type="pt").images
    assert (masked - ones).abs().max() > 1e-4


# ---------------------------------------------------------------- VAE slicing and tiling
def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    return calls, handle


def test_vae_slicing_decodes_one_image_at_a_time_with_the_same_images(pipe):
    ref = _run(pipe)
    calls, handle = _count_calls(pipe.vae.dec_in)
    pipe.enable_vae_slicing()
    try:
        sliced = _run(pipe)
    finally:
        pipe.disable_vae_slicing()
        handle.remove()
    assert calls == [1, 1, 1, 1]  # four images, four decodes of one
    torch.testing.assert_close(sliced, ref, atol=1e-5, rtol=0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    full = pipe.vae.encode(x).latent_dist.mean
    pipe.vae.enable_slicing()
    torch.testing.assert_close(pipe.vae.encode(x).latent_dist.mean, full, atol=1e-5, rtol=0)
    pipe.vae.disable_slicing()


def test_vae_tiling_covers_the_image_in_blended_tiles(pipe):
    vae = pipe.vae
    torch.manual_seed(0)
    z = torch.randn(1, vae.config.latent_channels, 40, 40)  # 80² pixels with f = 2
    with torch.no_grad():
        full = vae.decode(z).sample
        calls, handle = _count_calls(vae.dec_in)
        vae.tile_sample_min_size = 32  # 16-latent tiles with a 25 % overlap: stride 12 -> 3 x 3 tiles
        pipe.enable_vae_tiling()
        try:
            tiled = vae.decode(z).sample
            x = torch.rand(1, 3, 80, 80) * 2 - 1
            moments_tiled = vae.encode(x).latent_dist.mean
        finally:
            pipe.disable_vae_tiling()
            handle.remove()
        moments = vae.encode(x).latent_dist.mean
        assert len(calls) == 9 and tiled.shape == full.shape and torch.isfinite(tiled).all()
        # an approximation (GroupNorm statistics are per tile; this random VAE has 4-channel groups): close to the
        # untiled decode and encode (measured: mean difference 7 % / 7 % of the mean magnitude)
        assert (tiled - full).abs().mean() < 0.1 * full.abs().mean()
        assert moments_tiled.shape == moments.shape
        assert (moments_tiled - moments).abs().mean() < 0.1 * moments.abs().mean()
        torch.testing.assert_close(vae.decode(z).sample, full, atol=0, rtol=0)  # off again: the plain decode


@pytest.mark.parametrize("size, tile", [(40, 16), (37, 16), (16, 16), (50, 7)])
def test_tile_blending_is_exact_where_tiles_agree(size, tile):
    """Where every tile computes the same values (a pointwise map, an upsampling), the blend gives them exactly:
    every pixel is covered and the weights are normalised."""
    from msdm.models.vae import _tiled

    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(_tiled(lambda t: 2 * t + 1, x, tile, 0.25, 1, 3), 2 * x + 1)
    up = _tiled(lambda t: torch.nn.functional.interpolate(t, scale_factor=2.0), x, tile, 0.25, 2, 3)
    torch.testing.assert_close(up, torch.nn.functional.interpolate(x, scale_factor=2.0))


# ---------------------------------------------------------------- attention processors and slicing
class _CountAttentionMatmuls(TorchDispatchMode):
    """Counts the batched matmuls attention is made of (SDPA counts as one per call)."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket.__name__)
        if name in ("bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention",
                    "_scaled_dot_product_attention_math"):
            self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_the_unet_has_the_attention_processor_api(pipe):
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    unet = pipe.unet
    n = sum(isinstance(m, Attention) for m in unet.modules())
    procs = unet.attn_processors
    assert len(procs) == n > 0 and all(isinstance(p, AttnProcessor2_0) for p in procs.values())
    unet.set_default_attn_processor()
    assert all(type(p) is AttnProcessor for p in unet.attn_processors.values())
    # a dict of processors, one per layer, as diffusers takes it
    unet.set_attn_processor({k: AttnProcessor2_0() for k in procs})
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    with pytest.raises(ValueError):
        unet.set_attn_processor({next(iter(procs)): AttnProcessor()})  # a dict must name every layer


@pytest.mark.parametrize("slice_size", [1, 2, "auto", "max"])
def test_attention_slicing_slices_and_keeps_the_images(pipe, slice_size):
    from diffusers.models.attention_processor import SlicedAttnProcessor

    pipe.unet.set_default_attn_processor()
    ref = _run(pipe, steps=2)
    with _CountAttentionMatmuls() as plain:
        _run(pipe, steps=1)
    pipe.enable_attention_slicing(slice_size=slice_size)
    procs = pipe.unet.attn_processors.values()
    assert all(isinstance(p, SlicedAttnProcessor) for p in procs)
    with _CountAttentionMatmuls() as sliced:
        out = _run(pipe, steps=2)
    with _CountAttentionMatmuls() as sliced:
        _run(pipe, steps=1)
    # not a no-op: attention is computed in more, smaller matmuls than before
    assert sum(sliced.counts.values()) > sum(plain.counts.values()), (plain.counts, sliced.counts)
    assert (out - ref).abs().max() < 1e-3
    pipe.disable_attention_slicing()
    assert not any(isinstance(p, SlicedAttnProcessor) for p in pipe.unet.attn_processors.values())


def test_num_images_per_prompt_and_batch_match_single_images(pipe):
    """diffusers' batch checks: an image does not depend on what else is in the batch."""
    batch = _run(pipe)
    g = torch.Generator().manual_seed(2)
    single = pipe(PROMPTS[1], num_images_per_prompt=1, num_inference_steps=4, generator=[g], output_type="pt").images
    torch.testing.assert_close(single[0], batch[2], atol=1e-4, rtol=0)  # diffusers: max difference 1e-4
