"""Building blocks shared by the MSDM VAE and U-Net.

Both networks descend from Medfusion (Müller-Franzes et al., 2023) through the paper's reference code
(THunderCondOR/ImageCLEFmed-MEDVQA-GI-2024-MMCP-Team, ``src/msdm/models/utils/conv_blocks.py`` and
``attention_blocks.py``). The blocks below reproduce those layers parameter for parameter, written in plain torch
(no MONAI) and with diffusers' :class:`~diffusers.models.attention_processor.Attention` for attention, so that
PyTorch SDPA kernels are used.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: the block starts as the identity of its residual path."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ConvNormAct(nn.Module):
    """Conv → GroupNorm → Dropout → SiLU (Medfusion ``BasicBlock`` with norm and activation)."""

    def __init__(self, in_ch: int, out_ch: int, groups: int, dropout: float = 0.0, zero_conv: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if zero_conv:
            zero_module(self.conv)
        self.norm = nn.GroupNorm(groups, out_ch)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(self.conv(x))))


class ResBlock(nn.Module):
    """Medfusion ``UnetResBlock``: two post-activation conv units, each with its own skip.

    ``h = CNA(x) + skip(x)``; ``h += Linear(SiLU(emb))`` when an embedding is given; ``out = CNA0(h) + h`` where the
    second conv starts at zero. The embedding (time + pooled text in the U-Net) is *added* as a per-channel bias,
    exactly as the reference does; it is not a scale/shift.
    """

    def __init__(self, in_ch: int, out_ch: int, groups: int, dropout: float = 0.0, emb_dim: int | None = None):
        super().__init__()
        self.block1 = ConvNormAct(in_ch, out_ch, groups, dropout)
        self.skip1 = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.block2 = ConvNormAct(out_ch, out_ch, groups, dropout, zero_conv=True)
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_ch)) if emb_dim is not None else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x) + self.skip1(x)
        if self.emb_proj is not None and emb is not None:
            h = h + self.emb_proj(emb)[:, :, None, None]
        return self.block2(h) + h


class Downsample(nn.Module):
    """Strided 3×3 convolution (Medfusion ``BasicDown`` with learnable interpolation)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-exact ×2 interpolation, then a 3×3 convolution (Medfusion ``BasicUp``)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class AdaGroupNorm(nn.Module):
    """GroupNorm without affine whose scale/shift come from an embedding (reference ``ConditionalGroupNorm``).

    The projection starts at zero, so the block begins as a plain GroupNorm.
    """

    def __init__(self, groups: int, channels: int, emb_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.proj = nn.Sequential(nn.SiLU(), zero_module(nn.Linear(emb_dim, 2 * channels)))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(emb)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (scale + 1.0) + shift


class CrossAttnBlock(nn.Module):
    """The conditional transformer block that follows every residual block (reference
    ``ConditionalLinearTransformer``; Prompt to Polyp §4.2.1: "cross-attention followed by a feed-forward").

    ``x = x + CrossAttn(AdaGN(x, emb) → image tokens, text tokens, mask)``;
    ``x = x + FF(AdaGN(x, emb))`` with a 1×1-conv feed-forward C → 4C → C.
    """

    def __init__(
        self,
        channels: int,
        emb_dim: int,
        context_dim: int,
        num_heads: int = 8,
        groups: int = 32,
        dropout: float = 0.0,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.norm_attn = AdaGroupNorm(groups, channels, emb_dim)
        # inner dim = channels, heads = 8, head dim = channels // 8, no biases on q/k/v/out (as the reference).
        self.attn = Attention(
            query_dim=channels,
            cross_attention_dim=context_dim,
            heads=num_heads,
            dim_head=channels // num_heads,
            out_dim=channels,
            out_bias=False,
            dropout=dropout,
        )
        self.norm_ff = AdaGroupNorm(groups, channels, emb_dim)
        self.ff = nn.Sequential(
            nn.Conv2d(channels, ff_mult * channels, 1, bias=False),
            nn.SiLU(),
            nn.Conv2d(ff_mult * channels, channels, 1, bias=False),
        )

    def forward(
        self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, context_bias: torch.Tensor | None
    ) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm_attn(x, emb).flatten(2).transpose(1, 2)  # [B, HW, C]
        out = self.attn(tokens, encoder_hidden_states=context, attention_mask=context_bias)
        x = x + out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.ff(self.norm_ff(x, emb))


class AttentionPooling(nn.Module):
    """Pool text tokens into one vector: a single query (the masked mean token) attends over all tokens.

    Reference: ``AttentionPooling`` (diffusers ``Attention`` with ``out_dim = dim``, 64-d heads, no output bias). The
    reference query is the *unmasked* mean, which lets padding tokens leak in; we take the mean over real tokens
    only (the key/value padding mask is honoured in both versions).
    """

    def __init__(self, dim: int, head_dim: int = 64):
        super().__init__()
        self.attn = Attention(query_dim=dim, cross_attention_dim=dim, dim_head=head_dim, out_dim=dim, out_bias=False)

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None, context_bias: torch.Tensor | None):
        if mask is None:
            query = context.mean(dim=1, keepdim=True)
        else:
            m = mask.to(context.dtype).unsqueeze(-1)
            query = (context * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.attn(query, encoder_hidden_states=context, attention_mask=context_bias).squeeze(1)
