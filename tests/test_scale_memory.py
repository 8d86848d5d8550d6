"""``msdm memory``'s pieces against exact counts: saved-tensor accounting, the flash-attention and autocast
stand-ins, checkpointing, per-block scaling against a real run at another depth, weights and LoRA counts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from msdm.scale import specs as S
from msdm.scale.activations import ActivationCounter, flash_sdpa, gpu_emulation
from msdm.scale.memory import (
    TrainingSetup,
    measure_activations,
    parameter_count,
    predict,
    scale_activations,
    setup_from_config,
    trainable_parameter_count,
)

# ------------------------------------------------------------------------------------------------------------------
# The counting primitives
# ------------------------------------------------------------------------------------------------------------------


def test_counter_counts_each_saved_storage_once_and_never_weights():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)
    with ActivationCounter(mlp) as c:
        h = mlp[1](mlp[0](x))
        out = mlp[2](h)
        got = c.result()
    # Linear 1 keeps its input x (for its weight's gradient); ReLU keeps its output h, which Linear 2 also keeps as
    # its input: one storage. The weights are saved too, but they are parameters, not activations.
    assert got.saved == x.nbytes + h.nbytes and got.recompute == 0
    out.sum().backward()  # the hooks returned the tensors unchanged: backward still works
    assert mlp[0].weight.grad is not None


def test_flash_sdpa_equals_sdpa_and_keeps_what_flash_attention_keeps():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, requires_grad=True) for _ in range(3))
    mask = torch.rand(2, 1, 10, 10) > 0.2
    mask[..., 0] = True
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    gref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    with ActivationCounter(torch.nn.Module()) as c:
        out = flash_sdpa(q, k, v, attn_mask=mask)
        saved = c.result().saved
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out.square().sum(), (q, k, v)), gref):
        torch.testing.assert_close(a, b)
    lse = 2 * 3 * 10 * 4  # float32 log-sum-exp per query and head
    assert saved == q.nbytes + k.nbytes + v.nbytes + out.nbytes + lse + mask.nbytes
    # The math path (meta / CPU) keeps the 10 x 10 weights per head on top: more than flash does.
    with ActivationCounter(torch.nn.Module()) as c:
        _ = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.float().log())
        assert c.result().saved > saved


def test_autocast_emulation_follows_cuda_autocast_op_lists():
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    with gpu_emulation(torch.bfloat16):
        assert F.linear(x, w).dtype == torch.bfloat16  # matmuls in the half type
        assert (x @ w.T).dtype == torch.bfloat16
        h = F.linear(x, w)
        assert F.layer_norm(h, (6,)).dtype == torch.float32  # norms and softmax in float32
        assert torch.softmax(h, -1).dtype == torch.float32
        assert (h + 1).dtype == torch.bfloat16  # anything else: as it comes
    with gpu_emulation(None):
        assert F.linear(x, w).dtype == torch.float32


def test_checkpoint_accounting_keeps_the_math_and_counts_block_inputs():
    from msdm.models.presets import build_unet

    torch.manual_seed(0)
    unet = build_unet("tiny", 32)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    x, states, mask = torch.randn(1, 4, 8, 8), torch.randn(1, 6, 32), torch.ones(1, 6)
    t = torch.tensor([500])

    def step():
        return unet(x, t, states, mask).sample.square().mean()

    results = {}
    for ck in (False, True):
        unet.zero_grad()
        with ActivationCounter(unet, checkpointing=ck) as c:
            loss = step()
            results[ck] = c.result()
        loss.backward()
        results[(ck, "grad")] = [p.grad.clone() for p in unet.parameters()]
        results[(ck, "loss")] = loss.detach()
    torch.testing.assert_close(results[(True, "loss")], results[(False, "loss")])
    for a, b in zip(results[(True, "grad")], results[(False, "grad")]):
        torch.testing.assert_close(a, b)
    off, on = results[False], results[True]
    assert off.units == 0 and on.units == len(unet.down_blocks) + 3 + len(unet.up_blocks)
    assert on.saved < off.saved / 2 and 0 < on.recompute < off.saved
    assert not unet.gradient_checkpointing  # the counter turned it off again


# ------------------------------------------------------------------------------------------------------------------
# Per-block scaling against a real CPU run at another depth (tiny widths: the structure is what is tested)
# ------------------------------------------------------------------------------------------------------------------


def _tiny_specs() -> dict[str, S.ScaleSpec]:
    from msdm.models.presets import get_preset

    t = get_preset("tiny")
    tiny_clip = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                 "vocab_size": 1000, "projection_dim": 32, "max_position_embeddings": 77}
    return {
        "msdm": replace(S.SPECS["msdm"], components={
            "unet": ("MSDMUNet", {**t.unet, "text_embed_dim": 32}), "vae": ("MSDMVAE", dict(t.vae)),
            "text_encoder": ("CLIPTextModel", tiny_clip)},
            depth=(S.Depth("unet", "layers_per_block", 3, 1),)),
        "kandinsky-prior": replace(S.SPECS["kandinsky-prior"], components={
            "prior": ("PriorTransformer", {"num_attention_heads": 2, "attention_head_dim": 12, "embedding_dim": 32,
                                           "num_layers": 1})},
            depth=(S.Depth("prior", "num_layers", 4, 1),)),
        "kandinsky-decoder": replace(S.SPECS["kandinsky-decoder"], components={
            "unet": ("UNet2DConditionModel", {
                "in_channels": 4, "out_channels": 8, "addition_embed_type": "image",
                "down_block_types": ("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
                "up_block_types": ("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
                "mid_block_type": "UNetMidBlock2DSimpleCrossAttn", "block_out_channels": (32, 64),
                "layers_per_block": 1, "encoder_hid_dim": 32, "encoder_hid_dim_type": "image_proj",
                "cross_attention_dim": 32, "attention_head_dim": 4, "resnet_time_scale_shift": "scale_shift",
                "class_embed_type": None}),
            "movq": ("VQModel", {"block_out_channels": [32, 64]})},
            depth=(S.Depth("unet", "layers_per_block", 3, 1),)),
        "flux": replace(S.SPECS["flux"], components={
            "transformer": ("FluxTransformer2DModel", {
                "patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                "num_attention_heads": 2, "joint_attention_dim": 32, "pooled_projection_dim": 32,
                "axes_dims_rope": [4, 4, 8], "guidance_embeds": True}),
            "vae": ("AutoencoderKL", {"block_out_channels": (4, 8)})},
            depth=(S.Depth("transformer", "num_layers", 3, 1), S.Depth("transformer", "num_single_layers", 3, 1))),
    }


CASES = [  # generator, precision, rank, checkpointing, resolution, text tokens
    ("msdm", "32-true", None, True, 32, 6),
    ("msdm", "bf16-mixed", None, False, 32, 6),
    ("kandinsky-prior", "bf16-mixed", 4, False, 32, 77),
    ("kandinsky-decoder", "bf16-mixed", 4, True, 32, 77),
    ("flux", "bf16-mixed", 4, True, 32, 8),
    ("flux", "32-true", 4, False, 32, 8),
]


@pytest.mark.parametrize("generator,precision,rank,ckpt,res,tokens", CASES)
def test_scaled_activations_predict_a_real_cpu_run_at_another_depth(monkeypatch, generator, precision, rank, ckpt, res,
                                                                    tokens):
    monkeypatch.setattr(S, "SPECS", {**S.SPECS, **_tiny_specs()})
    frozen = "float32" if generator == "msdm" else "bfloat16"
    setup = TrainingSetup(generator=generator, resolution=res, batch_size=2, rank=rank, frozen_dtype=frozen,
                          precision=precision, text_tokens=tokens)
    assert setup.spec is S.SPECS[generator]
    predicted = scale_activations(setup, checkpointing=ckpt).full  # meta device, depths 1 and 2 -> 3 or 4
    measured = measure_activations(setup, "full", checkpointing=ckpt, device="cpu")  # real tensors at full depth
    # Stated tolerance 1 %; repeated blocks have identical shapes, so the scaling is exact in practice.
    assert measured.saved > 0
    assert abs(predicted.saved - measured.saved) <= 0.01 * measured.saved, (predicted, measured)
    assert predicted.recompute == measured.recompute and predicted.units == measured.units


def test_prior_scaling_equals_a_full_depth_meta_forward_at_published_width():
    setup = setup_from_config("configs/kandinsky_lora_prior_kvasir.yaml", batch_size=2)
    assert scale_activations(setup).full == measure_activations(setup, "full")


# ------------------------------------------------------------------------------------------------------------------
# Weights, LoRA and optimizer state
# ------------------------------------------------------------------------------------------------------------------


def test_parameter_counts_are_the_published_models():
    from msdm.lora.param_count import analytic_lora_params

    setup = setup_from_config("configs/msdm_unet_kvasir.yaml")
    assert round(trainable_parameter_count(setup) / 1e5) == 3265  # the paper preset's U-Net with CLIP-L: 326.5 M
    flux = setup_from_config("configs/flux_lora_kvasir.yaml")
    assert 11.8e9 < parameter_count(flux, "transformer") < 12.0e9  # FLUX.1-dev: "12 B"
    assert 4.7e9 < parameter_count(flux, "text_encoder_2") < 4.8e9  # T5-XXL encoder
    decoder = setup_from_config("configs/kandinsky_lora_decoder_kvasir.yaml")
    assert 1.2e9 < parameter_count(decoder, "unet") < 1.3e9  # "1.25 B"
    for s, kind in ((flux, "flux"), (decoder, "kandinsky_decoder")):  # peft's count = sum r (in + out) over targets
        assert trainable_parameter_count(s) == analytic_lora_params(kind, s.rank)


def test_weight_bytes_are_parameter_count_times_dtype_size_of_the_built_model():
    from msdm.scale.build import parameter_bytes

    setup = setup_from_config("configs/kandinsky_lora_decoder_kvasir.yaml")
    movq = S.get_spec("kandinsky-decoder").build("movq", "reduced", torch.bfloat16)
    assert parameter_bytes(movq) == 2 * parameter_count(setup, "movq", "reduced")
    assert all(p.dtype == torch.bfloat16 for p in movq.parameters())


def test_prediction_total_is_the_sum_of_its_parts_and_checkpointing_helps():
    setup = setup_from_config("configs/kandinsky_lora_decoder_kvasir.yaml", batch_size=1, resolution=64)
    p = predict(setup)
    d = p.as_dict()
    states = 16 * p.trainable_params  # weights + gradients + two AdamW moments, fp32
    assert sum(d["states"].values()) == states
    for key in ("checkpointing_off", "checkpointing_on"):
        act = d[key]
        assert act["peak"] == p.frozen_bytes + states + act["activations_saved"] + act["activations_recompute"]
    assert p.total(True) < p.total(False)
    assert p.frozen["unet"][1] == 2 * parameter_count(setup, "unet")  # bf16 frozen base
    # Activations are affine in the batch: a per-image part, plus the half copies of the LoRA weights that autocast
    # keeps for backward (2 bytes per LoRA parameter), which do not depend on it.
    a = [p.activations(False).saved] + [scale_activations(replace(setup, batch_size=b)).full.saved for b in (2, 3)]
    assert a[2] - a[1] == a[1] - a[0] > 0
    assert 2 * p.trainable_params <= a[0] - (a[1] - a[0]) < 1.01 * 2 * p.trainable_params


def test_setup_reads_the_shipped_configs():
    flux = setup_from_config("configs/flux_lora_kvasir.yaml")
    assert (flux.generator, flux.rank, flux.text_tokens, flux.gradient_checkpointing) == ("flux", 64, 512, True)
    assert flux.autocast_dtype == torch.bfloat16 and flux.frozen_on_gpu == ("transformer", "vae")
    msdm = setup_from_config("configs/msdm_unet_kvasir.yaml")
    assert (msdm.rank, msdm.autocast_dtype, msdm.text_tokens, msdm.batch_size) == (None, None, 64, 64)
    with pytest.raises(ValueError, match="not one of msdm's generators"):
        setup_from_config("configs/msdm_vae_kvasir.yaml")


# ------------------------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------------------------


def test_msdm_memory_prints_the_table_and_json(capsys):
    from msdm.cli import main

    assert main(["memory", "configs/kandinsky_lora_prior_kvasir.yaml", "--batch-size", "2", "--rank", "4", "64"]) == 0
    out = capsys.readouterr().out
    assert "predicted peak (torch.cuda.max_memory_allocated)" in out and "frozen image_encoder" in out
    assert "'ckpt on' does not apply" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("4 ", "64 "))]
    assert [r[0] for r in rows] == ["4", "64"]
    assert main(["memory", "configs/kandinsky_lora_prior_kvasir.yaml", "--batch-size", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["generator"] == "kandinsky-prior" and d["checkpointing_on"] is None and d["checkpointing_off"]["peak"] > 0
    assert main(["memory", "configs/msdm_vae_kvasir.yaml"]) == 2
    assert "not one of msdm's generators" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_check_script_dry_run_parses_every_step():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--dry-run"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for step in ("throughput", "flux_lora_memory", "msdm_memory", "gpu_memory_check"):
        assert f"== {step}:" in r.stdout
    plans = [line for line in r.stdout.splitlines() if line.startswith("plan:")]
    assert len(plans) == 3 + 4 and "every command parses" in r.stdout
    bad = subprocess.run(["bash", str(root / "bench" / "gpu_check.sh"), "--bogus"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown option" in bad.stderr
