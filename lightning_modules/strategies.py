"""Strategies with primitive arguments, so a YAML config can name them (LightningCLI re-parses every argument).

:class:`FluxFSDPStrategy` — FSDP for :class:`~lightning_modules.flux_lora.FluxLoRAModule` when the frozen FLUX
transformer (12 B parameters) must be sharded: GPUs with less memory than the ~30 GB one-GPU plan of docs/lora.md,
or larger batches. On 80 GB GPUs plain DDP is simpler and as fast (only the LoRA gradients are all-reduced); see
docs/scaling.md.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import FSDPStrategy

from msdm.dtypes import parse_dtype


class FluxFSDPStrategy(FSDPStrategy):
    """FSDP wrapping each FLUX (single-)transformer block, with optional activation checkpointing of the same blocks.

    Args:
        sharding_strategy: ``FULL_SHARD`` (ZeRO-3), ``SHARD_GRAD_OP`` (ZeRO-2) or ``HYBRID_SHARD`` (shard within a
            node, replicate across nodes: the multi-node default for slow inter-node links).
        activation_checkpointing: recompute the blocks in backward (the module's ``gradient_checkpointing`` is the
            non-FSDP equivalent; use one of the two).
        cpu_offload: keep the sharded parameters in CPU memory.
        param_dtype: dtype the blocks are gathered and computed in (``None``: as stored). FSDP flattens each block's
            parameters into one tensor, which needs one dtype per block: load the base in float32
            (``frozen_dtype: float32``, the LoRA weights are float32 anyway) and compute in bfloat16 here.
    """

    def __init__(self, sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = True,
                 cpu_offload: bool = False, param_dtype: str | None = "bfloat16", **kwargs):
        from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
        from torch.distributed.fsdp import MixedPrecision

        blocks = {FluxTransformerBlock, FluxSingleTransformerBlock}
        mp = None
        if param_dtype is not None:
            dt = parse_dtype(param_dtype)
            mp = MixedPrecision(param_dtype=dt, reduce_dtype=torch.float32, buffer_dtype=dt)
        super().__init__(
            auto_wrap_policy=blocks,
            activation_checkpointing_policy=blocks if activation_checkpointing else None,
            sharding_strategy=sharding_strategy,
            cpu_offload=cpu_offload,
            mixed_precision=mp,
            state_dict_type="full",  # LoRA-only checkpoints are small: gather them whole on rank 0
            **kwargs,
        )
