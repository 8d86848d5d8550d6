"""Predicted peak GPU memory of a training config at full depth (``msdm memory CONFIG``).

The prediction is a sum of parts, each counted, not guessed:

- **frozen weights**: parameters of every frozen component that stays on the GPU during steps, counted on the meta
  device from the published configs at full depth, times the size of ``frozen_dtype`` (text encoders that the
  config keeps on the CPU behind a cache are left out);
- **trainable weights, gradients, AdamW state**: the LoRA parameters peft adds at the config's rank and targets
  (or the whole MSDM U-Net), in float32: weights + gradients + two moments (+ an EMA copy when ``ema_decay`` is set);
- **activations**: bytes the trainable model's forward keeps for backward (:mod:`msdm.scale.activations`), at the
  config's batch size, resolution and text length, with CUDA's flash attention and autocast emulated, measured on
  the meta device at reduced depth and scaled per block to full depth: with ``A(d)`` the bytes at depth ``d``,
  ``A(full) = A(reduced) + Σ_k (A(reduced + 1 block of kind k) − A(reduced)) × (full_k − reduced_k)``. Repeated
  blocks have identical shapes, so this is exact up to what differs between blocks (tested against a measurement
  at another depth). With gradient checkpointing the held bytes are the checkpointed blocks' inputs plus the
  non-checkpointed ops' saved tensors, plus one block's recomputation during backward.

Not included (they add to what ``nvidia-smi`` shows, not to ``torch.cuda.max_memory_allocated``): the CUDA context
(~0.5 GB), the caching allocator's reserve and fragmentation, cuBLAS/cuDNN workspaces; and the transient peaks of
the frozen encoders' no-grad forwards (VAE / text encoding), which happen before the training forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import torch

from msdm.dtypes import parse_dtype
from msdm.scale.activations import ActivationCount, count_activations
from msdm.scale.specs import ScaleSpec, get_spec

GIB = 2**30
MODULE_CLASSES = {"MSDMUNetModule": "msdm", "FluxLoRAModule": "flux", "KandinskyLoRAModule": "kandinsky"}


@dataclass(frozen=True)
class TrainingSetup:
    """What decides the memory of a training step. :func:`setup_from_config` reads it from a ``msdm fit`` YAML."""

    generator: str  # a key of msdm.scale.specs.SPECS
    resolution: int = 256
    batch_size: int = 1
    rank: int | None = 64  # LoRA rank; None: the whole model trains (MSDM)
    target_modules: tuple[str, ...] | None = None
    gradient_checkpointing: bool = False
    frozen_dtype: str = "bfloat16"
    precision: str = "32-true"  # Lightning precision: "bf16-mixed" / "16-mixed" enable autocast
    text_tokens: int = 77  # MSDM max_length, FLUX max_sequence_length; CLIP 77 for the Kandinsky prior
    frozen_on_gpu: tuple[str, ...] = ()  # frozen components resident on the GPU during steps
    ema: bool = False
    source: str = ""

    @property
    def spec(self) -> ScaleSpec:
        return get_spec(self.generator)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        p = str(self.precision)
        return torch.bfloat16 if p.startswith("bf16") and "mixed" in p else (
            torch.float16 if p.startswith("16") and "mixed" in p else None)

    @property
    def weight_dtype(self) -> torch.dtype:
        return parse_dtype(self.frozen_dtype)

    @property
    def checkpointing_supported(self) -> bool:
        return self.generator != "kandinsky-prior"  # PriorTransformer has no checkpointing hooks


def _get(d: dict, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return default if d is None else d


def setup_from_config(path: str | Path, **overrides) -> TrainingSetup:
    """The :class:`TrainingSetup` of a LightningCLI config (model, data and trainer sections), plus ``overrides``."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text()) or {}
    model = cfg.get("model") or {}
    cls = str(model.get("class_path", "")).rsplit(".", 1)[-1]
    if cls not in MODULE_CLASSES:
        raise ValueError(f"{path}: model.class_path {model.get('class_path')!r} is not one of msdm's generators "
                         f"({', '.join(MODULE_CLASSES)}); msdm memory predicts training of those")
    a = model.get("init_args") or {}
    data = _get(cfg, "data", "init_args", default={})
    kind = MODULE_CLASSES[cls]
    common = {"resolution": int(data.get("resolution", 256)), "batch_size": int(data.get("batch_size", 1)),
              "gradient_checkpointing": bool(a.get("gradient_checkpointing", False)),
              "precision": str(_get(cfg, "trainer", "precision", default="32-true")), "source": str(path)}
    if kind == "msdm":
        if a.get("preset", "paper") != "paper":
            raise ValueError(f"{path}: msdm memory knows the paper preset's published sizes, not {a.get('preset')!r}")
        setup = TrainingSetup(
            generator="msdm", rank=None, frozen_dtype=a.get("frozen_dtype") or "float32",
            text_tokens=int(a.get("max_length", 64)), ema=bool(a.get("ema_decay")),
            # with a cache the VAE and text encoder are not loaded during steps (docs/scaling.md)
            frozen_on_gpu=() if a.get("cache_dir") else ("vae", "text_encoder"), **common)
    elif kind == "flux":
        offloaded = a.get("cache_text_embeddings", True) and a.get("offload_text_encoders", True)
        setup = TrainingSetup(
            generator="flux", rank=int(a.get("rank", 64)), target_modules=_tuple(a.get("target_modules")),
            frozen_dtype=a.get("frozen_dtype", "bfloat16"), text_tokens=int(a.get("max_sequence_length", 512)),
            frozen_on_gpu=("transformer", "vae") + (() if offloaded else ("text_encoder", "text_encoder_2")),
            **common)
    else:
        stage = a.get("stage", "prior")
        setup = TrainingSetup(
            generator=f"kandinsky-{stage}", rank=int(a.get("rank", 64)), target_modules=_tuple(a.get("target_modules")),
            frozen_dtype=a.get("frozen_dtype", "float32"), text_tokens=77,
            frozen_on_gpu=("prior", "text_encoder", "image_encoder") if stage == "prior"
            else ("unet", "movq", "image_encoder"), **common)
    return replace(setup, **{k: v for k, v in overrides.items() if v is not None})


def _tuple(x):
    return tuple(x) if x else None


# ------------------------------------------------------------------------------------------------------------------
# The trainable model and one training forward
# ------------------------------------------------------------------------------------------------------------------


def build_trainable(setup: TrainingSetup, depth: str | dict = "reduced", device: str = "meta") -> torch.nn.Module:
    """The model that trains, as the module builds it: frozen base in ``frozen_dtype`` + fp32 LoRA at ``rank``, or
    the fp32 MSDM U-Net."""
    from msdm.lora.adapters import add_lora, default_targets, make_lora_config

    spec = setup.spec
    if setup.rank is None:
        return spec.build(spec.trainable, depth, torch.float32, device)
    model = spec.build(spec.trainable, depth, setup.weight_dtype, device)
    targets = setup.target_modules or tuple(default_targets(setup.generator.replace("-", "_")))
    add_lora(model, make_lora_config(setup.rank, None, targets, init_lora_weights=False))
    return model


def training_forward(setup: TrainingSetup, model: torch.nn.Module, device: str = "meta"):
    """A closure running the training forward + loss of ``setup`` on ``model`` with inputs of the real shapes (the
    calls of msdm.lora.losses / msdm.diffusion.diffusion_loss)."""
    import torch.nn.functional as F

    b, res, spec = setup.batch_size, setup.resolution, setup.spec
    dtype = next(p for n, p in model.named_parameters() if "lora_" not in n).dtype
    kw = {"device": device}

    def randn(*shape, dt=dtype):
        return torch.randn(*shape, dtype=dt, **kw)

    t = torch.randint(0, 1000, (b,), **kw)
    if setup.generator == "msdm":
        f = 2 ** (len(spec.components["vae"][1]["block_out_channels"]) - 1)
        c, d = model.config.in_channels, model.config.text_embed_dim
        states, mask = randn(b, setup.text_tokens, d), torch.ones(b, setup.text_tokens, **kw)
        x, noise = randn(b, c, res // f, res // f), randn(b, c, res // f, res // f)
        return lambda: F.l1_loss(model(x, t, states, mask).sample.float(), noise.float())
    if setup.generator == "kandinsky-prior":
        e = model.config.embedding_dim
        x, target = randn(b, e), randn(b, e, dt=torch.float32)
        proj, hidden = randn(b, e), randn(b, setup.text_tokens, e)
        mask = torch.ones(b, setup.text_tokens, dtype=torch.bool, **kw)
        return lambda: F.mse_loss(model(x, timestep=t, proj_embedding=proj, encoder_hidden_states=hidden,
                                        attention_mask=mask).predicted_image_embedding.float(), target)
    if setup.generator == "kandinsky-decoder":
        f = 2 ** (len(spec.components["movq"][1]["block_out_channels"]) - 1)
        c = model.config.in_channels
        x, noise = randn(b, c, res // f, res // f), randn(b, c, res // f, res // f, dt=torch.float32)
        emb = randn(b, model.config.encoder_hid_dim)
        return lambda: F.mse_loss(model(x, t, encoder_hidden_states=None,
                                        added_cond_kwargs={"image_embeds": emb}).sample[:, :4].float(), noise)
    if setup.generator == "flux":
        from diffusers import FluxPipeline

        vae = spec.components["vae"][1]
        h = res // 2 ** (len(vae["block_out_channels"]) - 1)
        n = (h // 2) * (h // 2)
        x, target = randn(b, n, model.config.in_channels), randn(b, n, model.config.in_channels, dt=torch.float32)
        enc = randn(b, setup.text_tokens, model.config.joint_attention_dim)
        pooled = randn(b, model.config.pooled_projection_dim)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, h // 2, device, dtype)
        txt_ids = torch.zeros(setup.text_tokens, 3, dtype=dtype, **kw)
        ts = torch.rand(b, **kw).to(dtype)
        guidance = torch.ones(b, **kw) if model.config.guidance_embeds else None
        return lambda: F.mse_loss(model(hidden_states=x, timestep=ts, guidance=guidance, pooled_projections=pooled,
                                        encoder_hidden_states=enc, txt_ids=txt_ids, img_ids=img_ids,
                                        return_dict=False)[0].float(), target)
    raise ValueError(f"unknown generator {setup.generator!r}")


def measure_activations(setup: TrainingSetup, depth: str | dict = "reduced", checkpointing: bool = False,
                        device: str = "meta") -> ActivationCount:
    """Activation bytes of one training forward of ``setup`` at ``depth`` (on ``device``; meta: shapes only)."""
    model = build_trainable(setup, depth, device)
    model.train()
    return count_activations(model, training_forward(setup, model, device), checkpointing=checkpointing,
                             autocast_dtype=setup.autocast_dtype)


@dataclass
class ActivationScaling:
    """Activations at full depth from reduced-depth measurements, per block kind."""

    reduced: ActivationCount
    per_block: dict  # depth key -> bytes one more block adds (held, i.e. ActivationCount.saved)
    blocks: dict  # depth key -> blocks added from reduced to full
    full: ActivationCount = field(default=None)


def scale_activations(setup: TrainingSetup, checkpointing: bool = False, device: str = "meta") -> ActivationScaling:
    """Measure at reduced depth and at one more block of each kind; extrapolate to the published depth."""
    spec = setup.spec
    knobs = spec.knobs()
    base = {d.key: d.reduced for d in knobs}
    reduced = measure_activations(setup, base, checkpointing, device)
    per_block, blocks = {}, {}
    saved, recompute = reduced.saved, reduced.recompute
    units = reduced.units
    for d in knobs:
        more = measure_activations(setup, {**base, d.key: d.reduced + 1}, checkpointing, device)
        per_block[d.key] = more.saved - reduced.saved
        blocks[d.key] = d.full - d.reduced
        saved += per_block[d.key] * blocks[d.key]
        recompute = max(recompute, more.recompute)  # every block of a kind has the same shapes
        units += (more.units - reduced.units) * blocks[d.key]
    return ActivationScaling(reduced, per_block, blocks, ActivationCount(saved, recompute, units))


# ------------------------------------------------------------------------------------------------------------------
# Weights and the whole prediction
# ------------------------------------------------------------------------------------------------------------------


@cache
def _full_parameter_count(generator: str, component: str) -> int:
    spec = get_spec(generator)
    return sum(p.numel() for p in spec.build(component, "full", device="meta").parameters())


def parameter_count(setup: TrainingSetup, component: str, depth: str | dict = "full") -> int:
    """Parameters of ``component`` at ``depth``, built on the meta device."""
    if depth == "full":
        return _full_parameter_count(setup.generator, component)
    return sum(p.numel() for p in setup.spec.build(component, depth, device="meta").parameters())


def trainable_parameter_count(setup: TrainingSetup) -> int:
    """LoRA parameters at the setup's rank and targets on the published model (peft, counted at rank 1 and scaled:
    LoRA adds ``r · (in + out)`` per adapted layer), or the whole MSDM U-Net."""
    if setup.rank is None:
        return parameter_count(setup, setup.spec.trainable)
    from msdm.lora.param_count import lora_trainable_params

    kind = setup.generator.replace("-", "_")
    return lora_trainable_params(kind, setup.rank, setup.target_modules)


@dataclass
class MemoryPrediction:
    setup: TrainingSetup
    frozen: dict  # component -> (parameters, bytes)
    trainable_params: int
    activations_off: ActivationScaling | None
    activations_on: ActivationScaling | None

    @property
    def frozen_bytes(self) -> int:
        return sum(b for _, b in self.frozen.values())

    @property
    def states(self) -> dict:
        """float32 bytes of what the optimizer step keeps: weights, gradients, AdamW moments (and EMA)."""
        n = 4 * self.trainable_params
        out = {"trainable weights (fp32)": n, "gradients (fp32)": n, "AdamW moments (2 x fp32)": 2 * n}
        if self.setup.ema:
            out["EMA copy (fp32)"] = n
        return out

    def activations(self, checkpointing: bool) -> ActivationCount | None:
        act = self.activations_on if checkpointing else self.activations_off
        return None if act is None else act.full

    def total(self, checkpointing: bool) -> int | None:
        act = self.activations(checkpointing)
        return None if act is None else self.frozen_bytes + sum(self.states.values()) + act.peak

    def as_dict(self) -> dict:
        """Every part in bytes (``msdm memory --json``)."""
        s = self.setup
        out = {"generator": s.generator, "config": s.source, "resolution": s.resolution, "batch_size": s.batch_size,
               "rank": s.rank, "precision": s.precision, "frozen_dtype": s.frozen_dtype, "text_tokens": s.text_tokens,
               "frozen": {k: {"parameters": n, "bytes": b} for k, (n, b) in self.frozen.items()},
               "trainable_parameters": self.trainable_params, "states": self.states}
        for name, ck in (("checkpointing_off", False), ("checkpointing_on", True)):
            act = self.activations(ck)
            scaling = self.activations_on if ck else self.activations_off
            out[name] = None if act is None else {
                "activations_saved": act.saved, "activations_recompute": act.recompute, "peak": self.total(ck),
                "per_block": scaling.per_block, "blocks_added": scaling.blocks,
                "reduced_depth_saved": scaling.reduced.saved}
        return out


def predict(setup: TrainingSetup, checkpointing: str = "both") -> MemoryPrediction:
    """Predict the peak memory of ``setup``; ``checkpointing``: ``"both"``, ``"on"`` or ``"off"``."""
    size = torch.empty((), dtype=setup.weight_dtype).element_size()
    frozen = {}
    for comp in setup.frozen_on_gpu:
        n = parameter_count(setup, comp)
        frozen[comp] = (n, n * size)
    off = scale_activations(setup, False) if checkpointing in ("both", "off") else None
    on = None
    if checkpointing in ("both", "on") and setup.checkpointing_supported:
        on = scale_activations(setup, True)
    return MemoryPrediction(setup, frozen, trainable_parameter_count(setup), off, on)


def _g(n: int | None) -> str:
    return "n/a" if n is None else f"{n / GIB:.2f}"


def format_prediction(p: MemoryPrediction) -> str:
    """The table ``msdm memory`` prints (GiB = 2**30 bytes)."""
    s, spec = p.setup, p.setup.spec
    lines = [
        spec.title,
        f"config: {s.source or '(arguments)'}; {s.resolution}² images, batch {s.batch_size} per GPU, "
        f"precision {s.precision}, frozen {s.frozen_dtype}"
        + (f", LoRA rank {s.rank}" if s.rank else ", full training")
        + (f", {s.text_tokens} text tokens" if s.generator != "kandinsky-decoder" else ""),
        "full depth: " + ", ".join(f"{d.key} {d.full}" for d in spec.knobs()) + "; activations measured on the "
        "meta device at " + ", ".join(f"{d.key} {d.reduced} and {d.reduced + 1}" for d in spec.knobs()),
        "",
        f"{'GiB':<50}{'ckpt off':>10}{'ckpt on':>10}",
    ]

    def row(name, off, on):
        lines.append(f"{name:<50}{_g(off):>10}{_g(on):>10}")

    have_on = p.activations_on is not None
    for comp, (n, b) in p.frozen.items():
        row(f"frozen {comp} ({n / 1e6:,.0f} M params, {s.frozen_dtype})", b, b if have_on else None)
    what = "LoRA" if s.rank else "trainable"
    lines.append(f"{what + ' parameters':<50}{p.trainable_params / 1e6:>9.2f}M")
    for name, b in p.states.items():
        row(name, b, b if have_on else None)
    off, on = p.activations(False), p.activations(True)
    row("activations kept for backward", off and off.saved, on and on.saved)
    row("  + one checkpointed block recomputed in backward", off and off.recompute, on and on.recompute)
    row("predicted peak (torch.cuda.max_memory_allocated)", p.total(False), p.total(True))
    if p.activations_off is not None:
        sc = p.activations_off
        lines.append("activations per added block (ckpt off): " + ", ".join(
            f"{k} {v / 2**20:,.1f} MiB x {sc.blocks[k]}" for k, v in sc.per_block.items()))
    if not s.checkpointing_supported:
        lines.append("(the PriorTransformer has no gradient checkpointing: 'ckpt on' does not apply)")
    configured = s.gradient_checkpointing and s.checkpointing_supported
    lines.append(f"as configured (gradient_checkpointing={s.gradient_checkpointing}): {_g(p.total(configured))} GiB")
    return "\n".join(lines)


def format_rank_table(preds: list[MemoryPrediction]) -> str:
    """One row per LoRA rank: parameters and predicted peaks (``msdm memory --rank 4 8 ...``)."""
    lines = [f"{'rank':>5}{'LoRA params':>13}{'LoRA+grad+AdamW GiB':>21}{'peak ckpt off':>15}{'peak ckpt on':>14}"]
    for p in preds:
        lines.append(f"{p.setup.rank:>5}{p.trainable_params / 1e6:>12.2f}M{_g(sum(p.states.values())):>21}"
                     f"{_g(p.total(False)):>15}{_g(p.total(True)):>14}")
    return "\n".join(lines)
