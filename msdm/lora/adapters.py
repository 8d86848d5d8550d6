"""LoRA adapters: the target lists, the :class:`peft.LoraConfig` they become, and what trains.

Adapters are attached with the diffusers model method ``add_adapter(LoraConfig(...))`` (peft backend). That is the
path that still works for Kandinsky 2.2 on current diffusers: diffusers' own Kandinsky LoRA examples use attention
processor classes that were removed (diffusers#7606). The same method serves FLUX, so every module here saves
files that the stock pipelines load.

Paper defaults (Prompt to Polyp §4.2, Table 4): rank = alpha = 64, chosen by a sweep over ranks 4...256;
Gaussian initialisation of A (B = 0, so a fresh adapter leaves the base model unchanged), as in the reference
scripts ``kandinsky2_{prior,decoder}_lora_train.py``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

# The reference scripts' Kandinsky targets (attention projections of every attention layer).
KANDINSKY_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
# The decoder's SimpleCrossAttn layers also project the image-embedding tokens with add_k_proj / add_v_proj; they
# exist only in the decoder U-Net (not in the prior). Off by default, as in the paper.
KANDINSKY_DECODER_EXTRA_TARGETS = ("add_k_proj", "add_v_proj")
# diffusers' FLUX LoRA scripts' default (train_dreambooth_lora_flux.py, --lora_layers unset): attention and
# feed-forward of the double-stream blocks, attention q/k/v of the single-stream blocks.
FLUX_TARGETS = (
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)

DEFAULT_RANK = 64
PAPER_RANKS = (4, 8, 16, 32, 64, 128, 256)


def default_targets(model: str, decoder_added_kv: bool = False) -> list[str]:
    """Target module names for ``model`` in ``{"kandinsky_prior", "kandinsky_decoder", "flux"}``."""
    if model == "kandinsky_prior":
        return list(KANDINSKY_TARGETS)
    if model == "kandinsky_decoder":
        return list(KANDINSKY_TARGETS) + (list(KANDINSKY_DECODER_EXTRA_TARGETS) if decoder_added_kv else [])
    if model == "flux":
        return list(FLUX_TARGETS)
    raise ValueError(f"unknown model {model!r}; expected kandinsky_prior, kandinsky_decoder or flux")


def make_lora_config(
    rank: int = DEFAULT_RANK,
    alpha: float | None = None,
    target_modules: Iterable[str] = KANDINSKY_TARGETS,
    init_lora_weights: str | bool = "gaussian",
    dropout: float = 0.0,
    use_dora: bool = False,
    use_rslora: bool = False,
):
    """A :class:`peft.LoraConfig`; ``alpha=None`` means alpha = rank (the paper's choice, scale 1)."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    return LoraConfig(
        r=int(rank),
        lora_alpha=float(rank if alpha is None else alpha),
        target_modules=list(target_modules),
        init_lora_weights=init_lora_weights,
        lora_dropout=float(dropout),
        use_dora=use_dora,
        use_rslora=use_rslora,
    )


def add_lora(model: torch.nn.Module, config, adapter_name: str = "default") -> list[torch.nn.Parameter]:
    """Freeze ``model``, attach the adapter, keep its weights in float32 and return them (the trainable parameters).

    The base stays in whatever dtype it was loaded in (bf16 for FLUX); LoRA weights train in fp32, as diffusers'
    ``cast_training_params`` does. Raises if a target name matches nothing, instead of training nothing.
    """
    model.requires_grad_(False)
    try:
        model.add_adapter(config, adapter_name=adapter_name)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise ValueError(f"LoRA targets {sorted(config.target_modules)} do not fit {type(model).__name__}: {e}") from e
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def lora_state_dict(model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's saved-key format (``...lora_A.weight``), as diffusers writes them."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def lora_metadata(model: torch.nn.Module, adapter_name: str = "default") -> dict:
    """The adapter's LoraConfig as a JSON-able dict (diffusers stores it in the safetensors header)."""
    meta = model.peft_config[adapter_name].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in meta.items()}
