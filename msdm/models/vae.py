"""MSDM's VAE: the Medfusion latent embedder, stage 1 of MSDM (Prompt to Polyp §4.2.1).

Reference: ``VAE`` in ``src/msdm/models/embedders/latent_embedders.py`` of the paper's code, built there with
``hid_chs=[64, 128, 256, 512]``, ``strides=[1, 2, 2, 2]`` (f = 8), 8 latent channels, ``deep_supervision=1`` and no
attention. Parameter count of the ``paper`` preset: 13.37 M.

The public API mirrors diffusers' ``AutoencoderKL`` (``encode(x).latent_dist``, ``decode(z).sample``), so code that
handles one handles the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput

from msdm.models.blocks import Downsample, ResBlock, Upsample, zero_module


@dataclass
class MSDMVAEOutput(BaseOutput):
    """``sample``: full-resolution reconstruction; ``deep_supervision``: extra heads, highest resolution first;
    ``posterior``: the diagonal Gaussian q(z|x)."""

    sample: torch.Tensor
    deep_supervision: list
    posterior: DiagonalGaussianDistribution


class MSDMVAE(ModelMixin, AutoencoderMixin, ConfigMixin):
    """Convolutional VAE, f = 2^(len(block_out_channels) - 1), GroupNorm + SiLU residual blocks, no attention.

    diffusers' memory options work as for ``AutoencoderKL`` (``pipe.enable_vae_slicing()`` / ``enable_vae_tiling()``
    or ``vae.enable_slicing()`` / ``enable_tiling()``): *slicing* encodes and decodes a batch one image at a time
    (the same result: every layer works per image); *tiling* encodes and decodes overlapping tiles of
    ``tile_sample_min_size`` pixels and blends the overlaps linearly — an approximation (GroupNorm statistics are per
    tile) that makes large images fit.

    Args:
        in_channels / out_channels: image channels (3 for RGB; 1 for single-channel radiology).
        latent_channels: channels of z (8 in the paper).
        block_out_channels: channels per level; the first level keeps the resolution, each further level halves it.
        norm_num_groups: GroupNorm groups (8 in the reference).
        deep_supervision: number of extra output heads at 1/2, 1/4, ... resolution (1 in the reference).
        scaling_factor: multiply latents by this before diffusion (1.0: the reference diffuses raw posterior
            samples); kept in the config so a pipeline can standardise latents without retraining the VAE.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        latent_channels: int = 8,
        block_out_channels: tuple[int, ...] = (64, 128, 256, 512),
        norm_num_groups: int = 8,
        deep_supervision: int = 1,
        scaling_factor: float = 1.0,
    ):
        super().__init__()
        ch = list(block_out_channels)
        g = norm_num_groups
        if deep_supervision > len(ch) - 1:
            raise ValueError(f"deep_supervision={deep_supervision} needs at least {deep_supervision + 1} levels")
        self.gradient_checkpointing = False

        # ---- encoder: in-block, then (down, res) per further level, then 3x3 + 1x1 to 2*latent (mean, logvar)
        self.enc_in = ResBlock(in_channels, ch[0], g)
        self.enc_down = nn.ModuleList([Downsample(ch[i - 1], ch[i]) for i in range(1, len(ch))])
        self.enc_res = nn.ModuleList([ResBlock(ch[i], ch[i], g) for i in range(1, len(ch))])
        self.enc_out = nn.Sequential(
            nn.Conv2d(ch[-1], 2 * latent_channels, 3, padding=1), nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
        )

        # ---- decoder: in-block at the lowest resolution, then (up, res) per level, coarsest first
        self.dec_in = ResBlock(latent_channels, ch[-1], g)
        self.dec_up = nn.ModuleList([Upsample(ch[i + 1], ch[i]) for i in range(len(ch) - 1)])
        self.dec_res = nn.ModuleList([ResBlock(ch[i], ch[i], g) for i in range(len(ch) - 1)])
        self.out = zero_module(nn.Conv2d(ch[0], out_channels, 1))
        # Deep-supervision heads read the decoder features *entering* level i (i = 1 .. deep_supervision),
        # i.e. at 1/2^i of the output resolution (reference: ``outc_ver``).
        self.out_ds = nn.ModuleList([zero_module(nn.Conv2d(ch[i], out_channels, 1)) for i in range(1, deep_supervision + 1)])
        # diffusers' memory options (AutoencoderMixin.enable_slicing / enable_tiling set these)
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = 256  # pixels; tiles of tile_sample_min_size // f latents
        self.tile_overlap_factor = 0.25

    # ------------------------------------------------------------------ encoder
    def _run(self, block, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        h = self._run(self.enc_in, x)
        for down, res in zip(self.enc_down, self.enc_res):
            h = self._run(res, down(h))
        return self.enc_out(h)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode_one(xi) for xi in x.split(1)])
        else:
            moments = self._encode_one(x)
        posterior = DiagonalGaussianDistribution(moments)  # log-variance clamped to [-30, 20]
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def _encode_one(self, x: torch.Tensor) -> torch.Tensor:
        f, tile = self.downscale_factor, self.tile_sample_min_size
        if self.use_tiling and max(x.shape[-2:]) > tile:
            return _tiled(self._moments, x, tile, self.tile_overlap_factor, 1 / f, 2 * self.config.latent_channels)
        return self._moments(x)

    # ------------------------------------------------------------------ decoder
    def _decode(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self._run(self.dec_in, z)
        extra = {}
        for i in range(len(self.dec_up) - 1, -1, -1):
            if i < len(self.out_ds):
                extra[i] = self.out_ds[i](h)  # features entering level i have ch[i + 1] channels, 1/2^(i+1) res
            h = self._run(self.dec_res[i], self.dec_up[i](h))
        return self.out(h), [extra[i] for i in sorted(extra)]

    def decode_with_heads(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(image, deep-supervision heads)`` of latents ``z``: what training's loss reads (no slicing or tiling)."""
        return self._decode(z)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        if self.use_slicing and z.shape[0] > 1:
            sample = torch.cat([self._decode_one(zi) for zi in z.split(1)])
        else:
            sample = self._decode_one(z)
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def _decode_one(self, z: torch.Tensor) -> torch.Tensor:
        f = self.downscale_factor
        tile = max(1, self.tile_sample_min_size // f)
        if self.use_tiling and max(z.shape[-2:]) > tile:
            return _tiled(lambda t: self._decode(t)[0], z, tile, self.tile_overlap_factor, f, self.config.out_channels)
        return self._decode(z)[0]

    def forward(
        self, x: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> MSDMVAEOutput:
        posterior = self.encode(x).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        sample, ds = self._decode(z)
        return MSDMVAEOutput(sample=sample, deep_supervision=ds, posterior=posterior)

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.block_out_channels) - 1)


def _tiled(fn, x: torch.Tensor, tile: int, overlap: float, scale: float, out_channels: int) -> torch.Tensor:
    """Apply ``fn`` (which maps ``[B, C, h, w]`` to ``[B, out_channels, h·scale, w·scale]``) to overlapping
    ``tile``×``tile`` tiles of ``x`` and blend: each output pixel is the average of the tiles covering it, weighted
    by a ramp that falls to the tile's borders (inside the overlap), so seams fade instead of showing as edges."""
    b, _, h, w = x.shape
    stride = max(1, int(tile * (1 - overlap)))

    def starts(n):
        s = list(range(0, max(n - tile, 0) + 1, stride))
        if s[-1] + tile < n:
            s.append(n - tile)  # the last tile ends at the border
        return s

    out_h, out_w = round(h * scale), round(w * scale)
    out = x.new_zeros(b, out_channels, out_h, out_w)
    weight = x.new_zeros(1, 1, out_h, out_w)
    for i in starts(h):
        for j in starts(w):
            y = fn(x[:, :, i:i + tile, j:j + tile])
            th, tw = y.shape[-2:]
            ramp = _ramp(th, int(th * overlap / 2) or 1, x)[:, None] * _ramp(tw, int(tw * overlap / 2) or 1, x)[None, :]
            oi, oj = round(i * scale), round(j * scale)
            out[:, :, oi:oi + th, oj:oj + tw] += y * ramp
            weight[:, :, oi:oi + th, oj:oj + tw] += ramp
    return out / weight


def _ramp(n: int, edge: int, like: torch.Tensor) -> torch.Tensor:
    """Weights 1 inside, rising linearly over ``edge`` pixels at both ends (never 0: every pixel is covered)."""
    r = torch.ones(n, dtype=like.dtype, device=like.device)
    steps = (torch.arange(edge, dtype=like.dtype, device=like.device) + 1) / (edge + 1)
    r[:edge] = steps
    r[n - edge:] = torch.minimum(r[n - edge:], steps.flip(0))
    return r


@torch.no_grad()
def reconstruct_images(vae, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Reconstructions (posterior mean, decoded) of float images [N, 3, H, W] in [0, 1], in [0, 1], on the
    images' device; ``vae`` is an :class:`~msdm.models.vae.MSDMVAE` or any diffusers ``AutoencoderKL``-like model."""
    param = next(vae.parameters())
    out = []
    for start in range(0, len(images), batch_size):
        x = (images[start : start + batch_size] * 2 - 1).to(device=param.device, dtype=param.dtype)
        z = vae.encode(x).latent_dist.mean
        out.append(((vae.decode(z).sample.float() + 1) / 2).clamp(0, 1).to(images.device))
    return torch.cat(out)
