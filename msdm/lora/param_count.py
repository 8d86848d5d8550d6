"""Trainable LoRA parameters per rank on the real architectures, built on the meta device (Table 4 check).

*Prompt to Polyp* Table 4 lists the trainable parameters of the LoRA rank sweep (4 ... 256). Building the published
configs (:mod:`msdm.lora.published`) under ``torch.device("meta")`` allocates nothing and needs no weights, so this
runs anywhere in about a second and checks that our targets are the paper's: Kandinsky 2.2 prior + decoder with
``to_q/k/v/out.0`` at rank 4 gives 2.13 M (paper 2.1 M); FLUX.1-dev with diffusers' default targets at rank 4 gives
11.21 M (paper 11.2 M). LoRA adds ``r * (in + out)`` per targeted linear layer, so counts are linear in the rank.
"""

from __future__ import annotations

from functools import cache

import torch

from msdm.lora.adapters import PAPER_RANKS, default_targets, lora_parameter_count, make_lora_config
from msdm.lora.published import FLUX1_DEV_TRANSFORMER, KANDINSKY22_DECODER_UNET, KANDINSKY22_PRIOR

MODELS = ("kandinsky_prior", "kandinsky_decoder", "flux")


def build_on_meta(model: str) -> torch.nn.Module:
    """The published architecture of ``model`` with meta tensors (no memory, no weights)."""
    from diffusers import FluxTransformer2DModel, PriorTransformer, UNet2DConditionModel

    cls, cfg = {
        "kandinsky_prior": (PriorTransformer, KANDINSKY22_PRIOR),
        "kandinsky_decoder": (UNet2DConditionModel, KANDINSKY22_DECODER_UNET),
        "flux": (FluxTransformer2DModel, FLUX1_DEV_TRANSFORMER),
    }[model]
    with torch.device("meta"):
        return cls(**cfg)


@cache
def _count_rank1(model: str, targets: tuple[str, ...]) -> int:
    # LoRA is linear in the rank: count once at rank 1 with peft (what training will create) and scale.
    net = build_on_meta(model)
    with torch.device("meta"):
        net.add_adapter(make_lora_config(rank=1, target_modules=targets, init_lora_weights=False))
    return lora_parameter_count(net)


def lora_trainable_params(model: str, rank: int, targets: list[str] | tuple[str, ...] | None = None) -> int:
    """Number of LoRA parameters peft adds to the published ``model`` at ``rank`` with ``targets``."""
    targets = tuple(default_targets(model) if targets is None else targets)
    return _count_rank1(model, targets) * int(rank)


def analytic_lora_params(model: str, rank: int, targets: list[str] | tuple[str, ...] | None = None) -> int:
    """Independent check: ``sum(r * (in + out))`` over the ``nn.Linear`` layers whose name matches a target."""
    targets = tuple(default_targets(model) if targets is None else targets)
    net = build_on_meta(model)
    total = 0
    for name, mod in net.named_modules():
        if isinstance(mod, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            total += rank * (mod.in_features + mod.out_features)
    return total


def table4(ranks=PAPER_RANKS, decoder_added_kv: bool = False) -> list[dict]:
    """One row per rank: prior, decoder, Kandinsky total (prior + decoder), FLUX.1-dev — trainable parameters."""
    rows = []
    for r in ranks:
        prior = lora_trainable_params("kandinsky_prior", r)
        decoder = lora_trainable_params("kandinsky_decoder", r, default_targets("kandinsky_decoder", decoder_added_kv))
        rows.append({
            "rank": int(r),
            "kandinsky_prior": prior,
            "kandinsky_decoder": decoder,
            "kandinsky": prior + decoder,
            "flux": lora_trainable_params("flux", r),
        })
    return rows


def format_table4(rows: list[dict]) -> str:
    """The table as printed by ``msdm lora-params`` (millions, 2 decimals)."""

    def m(n: int) -> str:
        v = n / 1e6
        return f"{v:.2f} M"

    head = f"{'rank':>5} | {'Kandinsky 2.2 prior':>19} | {'decoder':>9} | {'prior+decoder':>13} | {'FLUX.1-dev':>10}"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row['rank']:>5} | {m(row['kandinsky_prior']):>19} | {m(row['kandinsky_decoder']):>9} | "
            f"{m(row['kandinsky']):>13} | {m(row['flux']):>10}"
        )
    return "\n".join(lines)
