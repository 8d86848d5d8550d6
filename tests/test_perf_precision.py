"""Mixed precision and kernels: a bf16-mixed step on CPU with bf16 frozen parts, channels-last, SDPA attention,
torch.compile keeping checkpoint keys."""

import lightning.pytorch as pl
import pytest
import torch
from conftest import make_loader

from lightning_modules import MSDMUNetModule
from msdm.models.presets import build_unet


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory):
    from conftest import save_tiny_vae

    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vae.ckpt")


def _fit(module, samples, tmp_path, precision="32-true", steps=2):
    pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, precision=precision, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               default_root_dir=tmp_path).fit(module, make_loader(samples))


@pytest.mark.parametrize("precision,frozen", [("bf16-mixed", "bfloat16"), ("32-true", "bfloat16")])
def test_bf16_training_step_runs_on_cpu(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path, precision, frozen):
    pl.seed_everything(0)
    m = MSDMUNetModule(preset="tiny", vae=vae_ckpt, text_encoder=tiny_text_encoder, max_length=16, lr=1e-2,
                       frozen_dtype=frozen, channels_last=True, ema_decay=0.9)
    assert m.vae.dtype == torch.bfloat16 and m.text_encoder.dtype == torch.bfloat16
    before = [p.detach().clone() for p in m.unet.parameters()]
    losses = []

    class Rec(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())

    pl.Trainer(accelerator="cpu", devices=1, max_steps=2, precision=precision, logger=False, callbacks=[Rec()],
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
               default_root_dir=tmp_path).fit(m, make_loader(kvasir_samples))
    assert len(losses) == 2 and all(torch.isfinite(x) for x in losses)
    assert all(p.dtype == torch.float32 for p in m.unet.parameters())  # fp32 master weights
    assert any(not torch.equal(a, b) for a, b in zip(before, m.unet.parameters()))  # the optimizer stepped
    assert m.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    img = m.generate(["Generate an image with 1 polyp."], seed=0, num_inference_steps=2)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()


def test_fp16_frozen_parts_with_fp32_unet_outside_autocast(vae_ckpt, tiny_text_encoder, kvasir_samples):
    # latents and text states are handed to the U-Net in its own dtype, whatever the frozen dtype
    m = MSDMUNetModule(preset="tiny", vae=vae_ckpt, text_encoder=tiny_text_encoder, max_length=16,
                       frozen_dtype="float16")
    batch = next(iter(make_loader(kvasir_samples)))
    z = m.batch_latents(batch)
    assert z.dtype == torch.float32 and m.vae.dtype == torch.float16


def test_attention_uses_pytorch_sdpa(tiny_text_encoder):
    from diffusers.models.attention_processor import AttnProcessor2_0
    from torch.overrides import TorchFunctionMode

    unet = build_unet("tiny", 32).eval()
    procs = {type(m.processor) for m in unet.modules() if hasattr(m, "processor")}
    assert procs == {AttnProcessor2_0}

    class Count(TorchFunctionMode):
        n = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.scaled_dot_product_attention:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        unet(torch.randn(2, 4, 16, 16), torch.tensor([3, 500]), torch.randn(2, 5, 32), torch.ones(2, 5))
    n_attn = sum(1 for m in unet.modules() if hasattr(m, "processor"))
    assert Count.n == n_attn  # every attention layer (cross-attention + pooling) ran through SDPA


@pytest.mark.slow
def test_torch_compile_matches_eager_and_keeps_checkpoint_keys(vae_ckpt, tiny_text_encoder):
    # aot_eager: dynamo traces the whole U-Net (diffusers Attention, checkpointing hooks) without inductor's C++
    # code generation, which takes minutes on a 2-core CPU; bench/gpu_throughput.py uses inductor.
    torch.manual_seed(0)
    eager = MSDMUNetModule(preset="tiny", vae=vae_ckpt, text_encoder=tiny_text_encoder, max_length=16)
    compiled = MSDMUNetModule(preset="tiny", vae=vae_ckpt, text_encoder=tiny_text_encoder, max_length=16,
                              torch_compile=True, compile_backend="aot_eager")
    compiled.unet.load_state_dict(eager.unet.state_dict())
    assert compiled.unet._compiled_call_impl is not None
    assert set(compiled.unet.state_dict()) == set(eager.unet.state_dict())  # no "_orig_mod." prefixes
    torch.nn.init.normal_(eager.unet.conv_out.weight, std=0.1)
    compiled.unet.conv_out.weight.data.copy_(eager.unet.conv_out.weight)
    args = (torch.randn(2, 4, 16, 16), torch.tensor([3, 500]), torch.randn(2, 16, 32), torch.ones(2, 16))
    with torch.no_grad():
        torch.testing.assert_close(compiled.unet(*args).sample, eager.unet(*args).sample, atol=1e-4, rtol=1e-4)


def test_fused_optimizer_option(vae_ckpt, tiny_text_encoder):
    m = MSDMUNetModule(preset="tiny", vae=vae_ckpt, text_encoder=tiny_text_encoder, max_length=16,
                       fused_optimizer=True)
    assert m.configure_optimizers().defaults["fused"] is True  # fused AdamW exists on CPU too (torch >= 2.4)
    m2 = MSDMUNetModule(preset="tiny", vae=vae_ckpt, text_encoder=tiny_text_encoder, max_length=16)
    assert not m2.configure_optimizers().defaults.get("fused")  # auto: only on GPUs
