"""The VAE training loss of MSDM stage 1: pixel + (optional) LPIPS + (1 − SSIM) on both output heads, + KL.

Reference: ``VAELoss`` in ``src/msdm/models/embedders/latent_embedders.py`` (from Medfusion). There every term is
summed over pixels and divided by the batch size; per-image LPIPS and SSIM, shaped [B, 1, 1, 1], are broadcast
over [B, C, H, W] before that sum, so each is multiplied by C·H·W. Users found those magnitudes confusing
(Medfusion issue #7), so we normalise as means. The mapping is exact:

    loss_reference = C·H·W · loss_msdm        (C, H, W of the full-resolution output)

because our full-resolution head uses means, the half-resolution deep-supervision head is weighted by its pixel
share (1/4), and the KL (summed over latent elements, averaged over the batch, as the reference) is weighted by
``kl_weight / (C·H·W)``. The optimum is the same; only the scale of the number differs.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure


class LPIPSUnavailableError(RuntimeError):
    pass


class VGGLPIPS(nn.Module):
    """LPIPS (VGG) from torchmetrics' learned linear heads with VGG16 weights from a local file.

    torchmetrics ships the LPIPS linear layers but fetches the VGG16 backbone from torchvision's download server,
    which is unreachable offline. Pass ``vgg_weights`` = a torchvision ``vgg16`` state dict
    (``vgg16-397923af.pth``, loaded with ``weights_only=True``).
    """

    def __init__(self, vgg_weights: str | os.PathLike):
        super().__init__()
        if not vgg_weights or not os.path.isfile(vgg_weights):
            raise LPIPSUnavailableError(
                f"LPIPS needs VGG16 weights, but {vgg_weights!r} is not a file. Offline, download "
                "https://download.pytorch.org/models/vgg16-397923af.pth on a machine with network, copy it here and "
                "pass its path as `lpips_weights`; or turn the perceptual term off with `lpips_weight: 0`."
            )
        from torchmetrics.functional.image.lpips import _LPIPS
        from torchvision.models.vgg import cfgs, make_layers

        self.lpips = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)  # linear heads from torchmetrics' package
        # Only the convolutional trunk is used: read `features.*` and ignore the classifier (saves 120 M params).
        state = torch.load(vgg_weights, map_location="cpu", weights_only=True)
        features = make_layers(cfgs["D"])
        feat_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not feat_state:
            raise LPIPSUnavailableError(f"{vgg_weights} holds no 'features.*' tensors: is it a torchvision vgg16 state dict?")
        features.load_state_dict(feat_state)
        for slice_ in (self.lpips.net.slice1, self.lpips.net.slice2, self.lpips.net.slice3, self.lpips.net.slice4,
                       self.lpips.net.slice5):
            for name, mod in slice_.named_children():
                mod.load_state_dict(features[int(name)].state_dict())
        self.requires_grad_(False).eval()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # inputs in [-1, 1]; returns per-image distances [B]
        return self.lpips(pred, target, normalize=False).reshape(pred.shape[0])


class VAELoss(nn.Module):
    """Mean-normalised Medfusion VAE loss (see the module docstring for the exact mapping to the reference).

    Args:
        pixel_loss: ``"mse"`` (default, the paper's VAE config) or ``"l1"`` (Medfusion's default).
        ssim_weight: weight of (1 − SSIM) (1.0 in the reference).
        lpips_weight: weight of LPIPS (1.0 in the reference; 0 disables it — the offline presets do).
        lpips_weights: local VGG16 state dict path, required when ``lpips_weight > 0``.
        kl_weight: the reference's embedding-loss weight (1e-6), applied to the per-sample KL sum and divided by
            C·H·W like the other terms.
    """

    def __init__(
        self,
        pixel_loss: str = "mse",
        ssim_weight: float = 1.0,
        lpips_weight: float = 0.0,
        lpips_weights: str | None = None,
        kl_weight: float = 1e-6,
    ):
        super().__init__()
        if pixel_loss not in ("mse", "l1"):
            raise ValueError(f"pixel_loss must be 'mse' or 'l1', got {pixel_loss!r}")
        self.pixel_loss, self.ssim_weight, self.lpips_weight, self.kl_weight = pixel_loss, ssim_weight, lpips_weight, kl_weight
        self.lpips = VGGLPIPS(lpips_weights) if lpips_weight > 0 else None

    def _head(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        pix = F.mse_loss(pred, target) if self.pixel_loss == "mse" else F.l1_loss(pred, target)
        terms = {"pixel": pix}
        if self.ssim_weight > 0:
            # SSIM on [0, 1] images, Gaussian window 11 / σ 1.5 as pytorch_msssim in the reference; negative
            # similarities clipped to 0 (the reference's nonnegative_ssim=True).
            p01, t01 = ((pred + 1) / 2).clamp(0, 1), ((target + 1) / 2).clamp(0, 1)
            k = min(11, (min(pred.shape[-2:]) // 2) * 2 - 1)  # the window must fit small deep-supervision heads
            ssim = structural_similarity_index_measure(p01, t01, data_range=1.0, kernel_size=k, reduction="none")
            terms["ssim"] = 1.0 - ssim.clamp(min=0).mean()
        if self.lpips is not None:
            terms["lpips"] = self.lpips(pred, target).mean()
        return terms

    def forward(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``out``: :class:`msdm.models.vae.MSDMVAEOutput`; ``target`` in [-1, 1]. Returns a dict with ``loss``."""
        logs: dict[str, torch.Tensor] = {}
        weights = {"pixel": 1.0, "ssim": self.ssim_weight, "lpips": self.lpips_weight}
        total = 0.0
        heads = [out.sample, *out.deep_supervision]
        full = target.shape[-2] * target.shape[-1]
        for i, pred in enumerate(heads):
            tgt = target if i == 0 else F.interpolate(target, size=pred.shape[-2:], mode="nearest-exact")
            share = (pred.shape[-2] * pred.shape[-1]) / full  # reference sums pixels: a half-res head weighs 1/4
            for name, v in self._head(pred, tgt).items():
                total = total + share * weights[name] * v
                logs[f"{name}" if i == 0 else f"{name}_ds{i}"] = v.detach()
        kl = out.posterior.kl().mean()  # sum over latent elements, mean over batch (as the reference)
        c, h, w = target.shape[1:]
        total = total + self.kl_weight * kl / (c * h * w)
        logs["kl"] = kl.detach()
        logs["loss"] = total
        return logs
