"""Real-size readiness on a CPU (issue 14): every generator at its published widths with reduced depth.

For each generator: build the full-width, reduced-depth folders (msdm.scale.build; random weights in the dtype the
shipped config stores them in), run ONE optimizer step through the LightningModule with a Lightning Trainer (the
config's precision, LoRA rank 64, gradient checkpointing on where the model has it), save, free, reload into the
stock pipeline (LoRA file) or ``MSDMPipeline`` and sample one image with 1-2 steps.

Sizes: MSDM runs at its real 256²; Kandinsky at 64² and FLUX at 16² (the smallest each accepts) with a 16-token T5
sequence, because bf16 matmuls and convolutions run 10-40x slower than fp32 on CPUs without bf16 instructions
(measured here: docs/scaling.md). The same models at the published resolution and text length (512² / 512 T5
tokens) run their training forward on the meta device in each test, which checks every shape at real size.

Marked ``scale``: deselected by default; ``.ci/run --scale`` or ``pytest -m scale`` runs them. Each test prints its
wall time and peak RSS (VmHWM, reset at the start of the test).
"""

from __future__ import annotations

import gc
import re
import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from msdm.lora.adapters import lora_state_dict
from msdm.lora.save import LORA_WEIGHT_NAME
from msdm.lora.testing import MEDVQA_CAPTIONS, FolderImageCaptions
from msdm.scale.build import (
    parameter_bytes,
    write_flux,
    write_kandinsky_decoder,
    write_kandinsky_prior,
    write_msdm,
)
from msdm.scale.memory import build_trainable, measure_activations, parameter_count, setup_from_config
from msdm.scale.specs import get_spec

pytestmark = pytest.mark.scale

FLUX_TOKENS = 16  # T5 tokens of the CPU run (the published 512 run on the meta device below)
PROMPT = MEDVQA_CAPTIONS[0]


def _vm_hwm_gib() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 2**20


@pytest.fixture(autouse=True)
def time_and_peak_rss(request, capsys):
    """Wall time and peak resident memory of the test (the kernel's high-water mark, reset first)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm = True
    except OSError:  # not Linux: time only
        hwm = False
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    rss = f", peak RSS {_vm_hwm_gib():.2f} GiB" if hwm else ""
    request.node.user_properties.append(("wall_s", round(dt, 1)))
    with capsys.disabled():
        print(f"\n[scale] {request.node.name}: {dt:.0f} s{rss} ({torch.get_num_threads()} threads)")


def _trainer(precision: str, **kw):
    return L.Trainer(accelerator="cpu", devices=1, max_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
                     logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, precision=precision, **kw)


def _loader(kvasir_dir, size: int, n: int = 1):
    return DataLoader(FolderImageCaptions(kvasir_dir / "images", n=n, size=size), batch_size=n)


def _is_dimension(v) -> bool:
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_is_dimension(x) for x in v)
    return isinstance(v, int) and not isinstance(v, bool)


def _assert_published_widths(spec, component: str, config) -> None:
    """Every dimension of the published config (integer values: sizes, channels, heads, vocabularies, positions)
    but the depth knobs has its published value in the loaded model's config; the depth knobs are smaller."""
    depth_keys = {d.key for d in spec.knobs(component)}
    for k, v in spec.components[component][1].items():
        if not _is_dimension(v):
            continue
        got = config[k] if isinstance(config, dict) else getattr(config, k)
        want = list(v) if isinstance(v, (list, tuple)) else v
        got = list(got) if isinstance(got, (list, tuple)) else got
        if k in depth_keys:
            assert got < want, (component, k, got, want)
        else:
            assert got == want, (component, k, got, want)


def _real_size_forward(config: str, **overrides) -> None:
    """The trainable model at the published resolution / text length, reduced depth, on the meta device."""
    setup = setup_from_config(config, **overrides)
    act = measure_activations(setup, "reduced", checkpointing=setup.gradient_checkpointing)
    assert act.saved > 0


def _lora_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lora_state_dict(model).items()}


def _assert_loaded_lora_equals(model, trained: dict[str, torch.Tensor]) -> None:
    (name,) = model.peft_config  # the one adapter the stock loader added
    loaded = lora_state_dict(model, name)
    assert set(loaded) == set(trained)
    for k, v in loaded.items():
        torch.testing.assert_close(v.float(), trained[k].to(v.dtype).float(), rtol=0, atol=0, msg=k)


def _assert_trained(trained: dict[str, torch.Tensor]) -> None:
    # B starts at zero (a fresh adapter is the identity): after one AdamW step the Bs with a gradient moved. Not
    # necessarily all: with random full-width weights a bf16 softmax can saturate, which gives a query projection an
    # exactly-zero gradient (seen in the 1-layer prior); tests/test_lora_*.py check that every adapter trains.
    bs = {k: v for k, v in trained.items() if "lora_B" in k}
    assert bs and any(v.abs().max() > 0 for v in bs.values())
    assert all(torch.isfinite(v).all() for v in trained.values())


# ------------------------------------------------------------------------------------------------------------------
# MSDM (paper preset): full training of the U-Net, fp32 (the config trains in 32-true)
# ------------------------------------------------------------------------------------------------------------------


def test_msdm_paper_width_step_export_and_sample_at_256(tmp_path, kvasir_dir):
    from lightning_modules.unet_module import MSDMUNetModule
    from msdm.pipeline import MSDMPipeline

    config = "configs/msdm_unet_kvasir.yaml"
    setup = setup_from_config(config, gradient_checkpointing=True)
    spec = get_spec("msdm")
    parts = write_msdm(tmp_path / "parts")
    m = MSDMUNetModule(preset="paper", vae=parts["vae"], text_encoder=parts["text_encoder"],
                       max_length=setup.text_tokens, unet_overrides={"layers_per_block": 1},
                       gradient_checkpointing=True, sampler="ddim", num_inference_steps=2, image_size=256)
    _assert_published_widths(spec, "unet", m.unet.config)
    _assert_published_widths(spec, "text_encoder", m.text_encoder.config)
    assert m.unet.gradient_checkpointing
    # The prediction's weight count is the built model's, parameter for parameter.
    assert parameter_bytes(m.unet) == 4 * parameter_count(setup, "unet", "reduced")
    states, mask = m.encode_prompts([PROMPT])
    assert states.shape == (1, 64, 768) and mask.shape == (1, 64)

    before = m.unet.conv_out.weight.detach().clone()
    trainer = _trainer(setup.precision)
    trainer.fit(m, _loader(kvasir_dir, 256, n=2))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert not torch.equal(m.unet.conv_out.weight, before)
    m.export(str(tmp_path / "pipe"))
    trained = {k: v.detach().clone() for k, v in m.unet.state_dict().items() if k.startswith("conv_out")}
    del m, trainer
    gc.collect()

    pipe = MSDMPipeline.from_pretrained(str(tmp_path / "pipe"))
    for k, v in trained.items():
        torch.testing.assert_close(pipe.unet.state_dict()[k], v, rtol=0, atol=0)
    pipe.set_progress_bar_config(disable=True)
    img = pipe([PROMPT], num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all() and 0 <= img.min() and img.max() <= 1
    del pipe
    _real_size_forward(config, gradient_checkpointing=True)


# ------------------------------------------------------------------------------------------------------------------
# Kandinsky 2.2: prior and decoder LoRA, frozen bf16 (the configs' frozen_dtype)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kandinsky_prior_dir(tmp_path_factory):
    return write_kandinsky_prior(tmp_path_factory.mktemp("scale") / "prior")


def test_kandinsky_prior_width_lora_step_and_stock_pipeline(tmp_path, kvasir_dir, kandinsky_prior_dir):
    from diffusers import KandinskyV22PriorPipeline

    from lightning_modules.kandinsky_lora import KandinskyLoRAModule

    config = "configs/kandinsky_lora_prior_kvasir.yaml"
    setup = setup_from_config(config)
    spec = get_spec("kandinsky-prior")
    m = KandinskyLoRAModule(stage="prior", prior_model=kandinsky_prior_dir, rank=64, alpha=64, frozen_dtype="bfloat16",
                            snr_gamma=5.0, lora_output_dir=str(tmp_path / "lora"))
    for comp, mod in (("prior", m.prior), ("text_encoder", m.text_encoder), ("image_encoder", m.image_encoder)):
        _assert_published_widths(spec, comp, mod.config)
    assert m.prior.proj_in.weight.dtype == torch.bfloat16 and m.image_encoder.dtype == torch.bfloat16
    lora = sum(p.numel() for p in m.lora_parameters())
    assert lora == sum(p.numel() for n, p in build_trainable(setup).named_parameters() if "lora_" in n)
    assert parameter_bytes(m.text_encoder) == 2 * parameter_count(setup, "text_encoder", "reduced")

    trainer = _trainer(setup.precision)
    trainer.fit(m, _loader(kvasir_dir, 64))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    trained = _lora_of(m.prior)
    _assert_trained(trained)
    assert (tmp_path / "lora" / LORA_WEIGHT_NAME).exists()
    del m, trainer
    gc.collect()

    pipe = KandinskyV22PriorPipeline.from_pretrained(kandinsky_prior_dir, torch_dtype=torch.bfloat16,
                                                     local_files_only=True)
    pipe.prior.load_lora_adapter(str(tmp_path / "lora"), weight_name=LORA_WEIGHT_NAME, prefix=None)
    _assert_loaded_lora_equals(pipe.prior, trained)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    # The prior's "image" is the CLIP ViT-bigG image embedding the decoder is conditioned on.
    assert out.image_embeds.shape == (1, 1280) and torch.isfinite(out.image_embeds.float()).all()
    del pipe
    _real_size_forward(config, resolution=512)


def test_kandinsky_decoder_width_lora_step_and_stock_pipelines(tmp_path, kvasir_dir, kandinsky_prior_dir):
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    from lightning_modules.kandinsky_lora import KandinskyLoRAModule

    config = "configs/kandinsky_lora_decoder_kvasir.yaml"
    setup = setup_from_config(config, gradient_checkpointing=True)
    spec = get_spec("kandinsky-decoder")
    decoder_dir = write_kandinsky_decoder(tmp_path / "decoder")
    m = KandinskyLoRAModule(stage="decoder", prior_model=kandinsky_prior_dir, decoder_model=decoder_dir, rank=64,
                            alpha=64, frozen_dtype="bfloat16", gradient_checkpointing=True, snr_gamma=5.0,
                            lora_output_dir=str(tmp_path / "lora"))
    for comp, mod in (("unet", m.unet), ("movq", m.movq), ("image_encoder", m.image_encoder)):
        _assert_published_widths(spec, comp, mod.config)
    assert m.unet.conv_in.weight.dtype == torch.bfloat16 and m.movq.dtype == torch.bfloat16
    assert parameter_bytes(m.movq) == 2 * parameter_count(setup, "movq", "reduced")
    lora = sum(p.numel() for p in m.lora_parameters())
    assert lora == sum(p.numel() for n, p in build_trainable(setup).named_parameters() if "lora_" in n)

    trainer = _trainer(setup.precision)
    trainer.fit(m, _loader(kvasir_dir, 64))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    trained = _lora_of(m.unet)
    _assert_trained(trained)
    del m, trainer
    gc.collect()

    # Text -> CLIP image embedding (stock prior) -> image (stock decoder with the trained LoRA), 1280-d in between.
    prior = KandinskyV22PriorPipeline.from_pretrained(kandinsky_prior_dir, torch_dtype=torch.bfloat16,
                                                      local_files_only=True)
    prior.set_progress_bar_config(disable=True)
    emb = prior(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0))  # UnCLIP needs >= 2
    del prior
    gc.collect()
    pipe = KandinskyV22Pipeline.from_pretrained(decoder_dir, torch_dtype=torch.bfloat16, local_files_only=True)
    pipe.unet.load_lora_adapter(str(tmp_path / "lora"), weight_name=LORA_WEIGHT_NAME, prefix=None)
    _assert_loaded_lora_equals(pipe.unet, trained)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(image_embeds=emb.image_embeds, negative_image_embeds=emb.negative_image_embeds, height=64, width=64,
               num_inference_steps=1, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 64, 64) and torch.isfinite(img.float()).all()
    del pipe
    _real_size_forward(config, resolution=512, gradient_checkpointing=True)


# ------------------------------------------------------------------------------------------------------------------
# FLUX.1-dev LoRA, frozen bf16, gradient checkpointing, cached text embeddings (the config)
# ------------------------------------------------------------------------------------------------------------------


def test_flux_dev_width_lora_step_and_stock_pipeline(tmp_path, kvasir_dir):
    from diffusers import FluxPipeline

    from lightning_modules.flux_lora import FluxLoRAModule

    config = "configs/flux_lora_kvasir.yaml"
    setup = setup_from_config(config)
    spec = get_spec("flux")
    flux_dir = write_flux(tmp_path / "flux")
    m = FluxLoRAModule(model=flux_dir, rank=64, alpha=64, frozen_dtype="bfloat16", gradient_checkpointing=True,
                       max_sequence_length=FLUX_TOKENS, text_cache_dir="memory", guidance_scale=1.0,
                       lora_output_dir=str(tmp_path / "lora"))
    _assert_published_widths(spec, "transformer", m.transformer.config)
    _assert_published_widths(spec, "vae", m.vae.config)
    _assert_published_widths(spec, "text_encoder", m._text["text_encoder"].config)
    _assert_published_widths(spec, "text_encoder_2", m._text["text_encoder_2"].config)
    assert m.transformer.x_embedder.weight.dtype == torch.bfloat16 and m.transformer.gradient_checkpointing
    text = m.encode_prompts([PROMPT])
    assert text["prompt_embeds"].shape == (1, FLUX_TOKENS, 4096) and text["pooled_prompt_embeds"].shape == (1, 768)
    assert parameter_bytes(m.vae) == 2 * parameter_count(setup, "vae", "reduced")
    lora = sum(p.numel() for p in m.lora_parameters())
    assert lora == sum(p.numel() for n, p in build_trainable(setup).named_parameters() if "lora_" in n)

    trainer = _trainer(setup.precision)
    trainer.fit(m, _loader(kvasir_dir, 16))
    assert trainer.global_step == 1 and torch.isfinite(trainer.callback_metrics["train/loss"])
    trained = _lora_of(m.transformer)
    _assert_trained(trained)
    del m, trainer, text
    gc.collect()

    pipe = FluxPipeline.from_pretrained(flux_dir, torch_dtype=torch.bfloat16, local_files_only=True)
    pipe.load_lora_weights(str(tmp_path / "lora"))  # the one line of docs/lora.md
    _assert_loaded_lora_equals(pipe.transformer, trained)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(PROMPT, height=16, width=16, num_inference_steps=1, guidance_scale=3.5,
               max_sequence_length=FLUX_TOKENS, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img.float()).all()
    del pipe
    _real_size_forward(config, resolution=512)
