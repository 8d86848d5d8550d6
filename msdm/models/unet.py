"""MSDM's text-conditioned U-Net: the latent denoiser, stage 2 of MSDM (Prompt to Polyp §4.2.1).

Reference: ``UNet`` in ``src/msdm/models/estimators/unet.py`` of the paper's code with ``hid_chs=[256, 256, 512,
1024]``, ``num_res_blocks=2``, ``use_attention='diffusers'``, GroupNorm(32), dropout 0.1, a 1024-d time embedding
and ``deep_supervision=False``. Layout (for 256² images, 32² latents):

* ``conv_in`` (8 → 256) at 32²;
* encoder levels 1..3 with 256, 512, 1024 channels at 32², 16², 8²; each level has 2 × (ResBlock → CrossAttnBlock)
  and every level but the last ends with a strided-conv downsample;
* middle: ResBlock → CrossAttnBlock → ResBlock;
* decoder mirrors the encoder with 3 × (concat skip → ResBlock → CrossAttnBlock) per level (+ upsample);
* zero-initialised 1×1 ``conv_out``.

Text conditioning (two paths, both from the frozen text encoder's token states [B, L, D]):

1. tokens → Linear(D, 1024) → SiLU → Linear(1024, 1024) = the cross-attention context of every CrossAttnBlock;
2. the projected tokens are attention-pooled into one vector that is **added to the time embedding**; the sum
   feeds every ResBlock (additive bias) and every AdaGroupNorm (scale/shift).

Parameter count of the ``paper`` preset with a 768-d text encoder (CLIP ViT-L/14): 326.5 M. The paper quotes
"~500 M"; the count here is what its published code builds, see docs/msdm.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.models.embeddings import TimestepEmbedding, get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput

from msdm.models.blocks import AttentionPooling, CrossAttnBlock, Downsample, ResBlock, Upsample, zero_module


class _Stage(nn.Module):
    """ResBlock → CrossAttnBlock (→ optional resampling): one entry of the reference ``SequentialEmb`` lists."""

    def __init__(self, res: ResBlock, attn: CrossAttnBlock, resample: nn.Module | None = None):
        super().__init__()
        self.res, self.attn, self.resample = res, attn, resample

    def forward(self, x, emb, context, context_bias):
        x = self.attn(self.res(x, emb), emb, context, context_bias)
        return self.resample(x) if self.resample is not None else x


class MSDMUNet(ModelMixin, AttentionMixin, ConfigMixin):
    """ε-predicting U-Net over VAE latents, conditioned on text token states.

    Every attention layer is a diffusers :class:`~diffusers.models.attention_processor.Attention`, and the model has
    diffusers' attention-processor API (``attn_processors``, ``set_attn_processor``, ``set_default_attn_processor``,
    ``set_attention_slice``), so ``pipe.enable_attention_slicing()`` and custom processors work as with diffusers'
    own U-Nets.

    Args:
        in_channels / out_channels: latent channels (8).
        block_out_channels: ``[stem, level1, level2, level3]`` channels (reference ``hid_chs``).
        layers_per_block: residual blocks per encoder level (2); the decoder has one more.
        norm_num_groups: GroupNorm groups (32).
        dropout: dropout in residual blocks and attention outputs (0.1).
        time_proj_dim / time_embed_dim: sinusoidal features 256 → MLP → 1024.
        text_embed_dim: hidden size D of the text encoder (768 for CLIP ViT-L/14, 384 for all-MiniLM-L6-v2).
        num_attention_heads: heads in every cross-attention (8).
        ff_mult: feed-forward expansion (4).
        text_proj_bias: bias of the two text-projection layers (``COND_EMB_BIAS`` in the reference config).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 8,
        block_out_channels: tuple[int, ...] = (256, 256, 512, 1024),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        dropout: float = 0.1,
        time_proj_dim: int = 256,
        time_embed_dim: int = 1024,
        text_embed_dim: int = 768,
        num_attention_heads: int = 8,
        ff_mult: int = 4,
        text_proj_bias: bool = False,
    ):
        super().__init__()
        ch = list(block_out_channels)
        g, e, n = norm_num_groups, time_embed_dim, layers_per_block
        self.gradient_checkpointing = False

        def res(i, o):
            return ResBlock(i, o, g, dropout, emb_dim=e)

        def attn(c):
            return CrossAttnBlock(c, e, e, num_attention_heads, g, dropout, ff_mult)

        # ---- embeddings
        self.time_embedding = TimestepEmbedding(time_proj_dim, e)  # Linear → SiLU → Linear
        self.text_proj = nn.Sequential(
            nn.Linear(text_embed_dim, e, bias=text_proj_bias), nn.SiLU(), nn.Linear(e, e, bias=text_proj_bias)
        )
        self.text_pool = AttentionPooling(e, head_dim=min(64, e))

        # ---- encoder
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        down = []
        for lvl in range(1, len(ch)):
            for k in range(n):
                down.append(_Stage(res(ch[lvl - 1] if k == 0 else ch[lvl], ch[lvl]), attn(ch[lvl])))
            if lvl < len(ch) - 1:
                down.append(Downsample(ch[lvl], ch[lvl]))
        self.down_blocks = nn.ModuleList(down)

        # ---- middle
        self.mid_res1, self.mid_attn, self.mid_res2 = res(ch[-1], ch[-1]), attn(ch[-1]), res(ch[-1], ch[-1])

        # ---- decoder, in execution order (deepest level first)
        up = []
        for lvl in range(len(ch) - 1, 0, -1):
            for k in range(n, -1, -1):
                skip = ch[lvl - 1] if k == 0 else ch[lvl]  # channels of the encoder activation concatenated here
                out = ch[lvl - 1] if k == 0 else ch[lvl]
                resample = Upsample(out, out) if (k == 0 and lvl > 1) else None
                up.append(_Stage(res(ch[lvl] + skip, out), attn(out), resample))
        self.up_blocks = nn.ModuleList(up)

        self.conv_out = zero_module(nn.Conv2d(ch[0], out_channels, 1))

    # ------------------------------------------------------------------ attention processors (diffusers' API)
    def set_default_attn_processor(self) -> None:
        """The plain (non-SDPA) attention everywhere, as diffusers' models do; used by reproducibility tests."""
        self.set_attn_processor(AttnProcessor())

    def set_attention_slice(self, slice_size: str | int | None = "auto") -> None:
        """Compute attention in slices of ``slice_size`` (batch × head) rows to save memory.

        ``"auto"``: half of each layer's heads per slice; ``"max"``: one row at a time; an int: that many rows (a layer
        with fewer heads takes all of them in one slice); ``None``: back to the default processor. Called by
        ``DiffusionPipeline.enable_attention_slicing`` / ``disable_attention_slicing``.
        """
        for module in self.modules():
            if not isinstance(module, Attention):
                continue
            heads = module.sliceable_head_dim
            if slice_size is None:
                size = None
            elif slice_size == "auto":
                size = max(1, heads // 2)
            elif slice_size == "max":
                size = 1
            elif isinstance(slice_size, int) and slice_size >= 1:
                size = min(slice_size, heads)
            else:
                raise ValueError(f"slice_size must be 'auto', 'max', a positive int or None, got {slice_size!r}")
            module.set_attention_slice(size)

    def _ckpt(self, fn, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            # diffusers' convention: enable_gradient_checkpointing(gradient_checkpointing_func=...) may supply the
            # function (msdm.scale.activations counts what each checkpointed block holds through it)
            func = getattr(self, "_gradient_checkpointing_func", None)
            if func is not None:
                return func(fn, *args)
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ):
        """Predict ε for ``sample`` [B, C, h, w] at ``timestep`` given text token states [B, L, D] and their mask
        [B, L] (1 = real token, 0 = padding)."""
        b = sample.shape[0]
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.reshape(-1).to(sample.device).expand(b)
        # sinusoidal features as Medfusion's SinusoidalPosEmb: [sin, cos], shift 1 (identical to diffusers' helper)
        t_feat = get_timestep_embedding(timestep, self.config.time_proj_dim, flip_sin_to_cos=False, downscale_freq_shift=1)
        emb = self.time_embedding(t_feat.to(sample.dtype))

        context = self.text_proj(encoder_hidden_states.to(sample.dtype))
        bias = None
        if encoder_attention_mask is not None:
            # additive key bias, [B, 1, L]: 0 for tokens, -10000 for padding (diffusers' UNet2DConditionModel convention)
            bias = (1.0 - encoder_attention_mask.to(sample.dtype)).unsqueeze(1) * -10000.0
        emb = emb + self.text_pool(context, encoder_attention_mask, bias)

        h = self.conv_in(sample)
        skips = [h]
        for blk in self.down_blocks:
            h = self._ckpt(blk, h) if isinstance(blk, Downsample) else self._ckpt(blk, h, emb, context, bias)
            skips.append(h)
        h = self._ckpt(self.mid_res1, h, emb)
        h = self._ckpt(self.mid_attn, h, emb, context, bias)
        h = self._ckpt(self.mid_res2, h, emb)
        for blk in self.up_blocks:
            h = self._ckpt(blk, torch.cat([h, skips.pop()], dim=1), emb, context, bias)
        out = self.conv_out(h)
        return UNet2DOutput(sample=out) if return_dict else (out,)
