"""A tiny U-Net that reads a real colonoscopy frame: its polyp mask, and whether it shows the box artefact and text.

The facts a real-frame caption states (:mod:`msdm.facts.frames`: polyp count, size class, locations; box; text)
must be read back from *generated* images to score adherence; masks exist only for real frames. This network is
trained on the real Kvasir-SEG masks of a train split (``kvasir-seg-extra``) and on hand labels of the box and text
(``msdm/assets/kvasir_seg_overlay_labels.csv``) by :mod:`msdm.metrics.adherence.train_real_detector`, with the
degradations of generated images (blur, VAE-like smoothing, JPEG, noise, colour shifts: the polyp detector's
:func:`~msdm.synthetic.train_polyp_detector.augment`). Its weights (< 1 MB, float16 safetensors) ship in
``msdm/assets/real_frame_detector.safetensors`` with the decision thresholds and the measured accuracies (held-out
``kvasir-seg`` frames, clean and VAE-reconstructed) in the file's metadata. The facts of a predicted mask use the
very definitions of the facts of a true mask (:func:`msdm.facts.frames.mask_facts`).

Input: float images [B, 3, H, W] in [0, 1] at any resolution, resized to 64 px (antialiased): the training
resolution; 64 and 128 px inputs (the generated sizes) are evaluated in docs/metrics.md. CPU, deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["INPUT_SIZE", "DEFAULT_WEIGHTS", "RealFrameNet", "RealFrameModel", "to_input", "save_real_frame_model",
           "load_real_frame_model"]

INPUT_SIZE = 64
DEFAULT_WEIGHTS = "real_frame_detector.safetensors"  # in msdm/assets


def _conv(ci: int, co: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class RealFrameNet(nn.Module):
    """U-Net (Ronneberger et al. 2015), four scales 64 → 32 → 16 → 8 px, two 3x3 convolutions each, skip
    connections; outputs ``mask`` logits [B, 64, 64] and ``overlay`` logits [B, 2] (box, text). The overlay head
    keeps the 8x8 layout (a 1x1 reduction, then a linear layer over all positions): the box is defined by *where*
    the dark rectangle is (lower left), which global pooling would forget."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 48, 64), overlay_channels: int = 8):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.widths, self.overlay_channels = tuple(widths), int(overlay_channels)
        self.enc1 = nn.Sequential(_conv(3, w1), _conv(w1, w1))  # 64
        self.enc2 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))  # 32
        self.enc3 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3))  # 16
        self.enc4 = nn.Sequential(_conv(w3, w4, 2), _conv(w4, w4))  # 8
        self.dec3 = nn.Sequential(_conv(w4 + w3, w3), _conv(w3, w3))
        self.dec2 = nn.Sequential(_conv(w3 + w2, w2), _conv(w2, w2))
        self.dec1 = nn.Sequential(_conv(w2 + w1, w1), _conv(w1, w1))
        self.mask = nn.Conv2d(w1, 1, 1)
        self.reduce = nn.Sequential(nn.Conv2d(w4, overlay_channels, 1), nn.ReLU(inplace=True))
        self.overlay = nn.Linear(overlay_channels * (INPUT_SIZE // 8) ** 2, 2)

    @staticmethod
    def _up(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: [B, 3, 64, 64] in [-1, 1] → ``{"mask": [B, 64, 64], "overlay": [B, 2]}`` logits."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(self._up(e4, e3))
        d2 = self.dec2(self._up(d3, e2))
        d1 = self.dec1(self._up(d2, e1))
        return {"mask": self.mask(d1)[:, 0], "overlay": self.overlay(self.reduce(e4).flatten(1))}


def to_input(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] (any H, W) → [B, 3, 64, 64] in [-1, 1], resized with antialiasing."""
    x = images.float()
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1) * 2 - 1


@dataclass
class RealFrameModel:
    """:class:`RealFrameNet` + its calibrated thresholds (on sigmoid probabilities) + its training record."""

    net: RealFrameNet
    thresholds: dict = field(default_factory=lambda: {"mask": 0.5, "min_rel": 0.0, "box": 0.5, "text": 0.5})
    metadata: dict = field(default_factory=dict)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 128) -> dict[str, torch.Tensor]:
        """``mask`` [B, 64, 64], ``box`` [B], ``text`` [B] probabilities of float images [B, 3, H, W] in [0, 1]."""
        self.net.eval()
        device = next(self.net.parameters()).device
        parts = []
        for start in range(0, len(images), batch_size):
            out = self.net(to_input(images[start : start + batch_size].to(device)))
            p = torch.sigmoid(out["overlay"])
            parts.append({"mask": torch.sigmoid(out["mask"]).cpu(), "box": p[:, 0].cpu(), "text": p[:, 1].cpu()})
        if not parts:
            raise ValueError("no images given")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def to(self, device) -> RealFrameModel:
        self.net.to(device)
        return self


def save_real_frame_model(model: RealFrameModel, path: str | Path) -> None:
    """Weights (float16) + architecture, thresholds and training record as metadata, written atomically."""
    from safetensors.torch import save

    from msdm.io import atomic_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.net.state_dict().items()}
    meta = {"architecture": json.dumps({"widths": list(model.net.widths),
                                        "overlay_channels": model.net.overlay_channels}),
            "thresholds": json.dumps(model.thresholds), "record": json.dumps(model.metadata)}
    with atomic_file(path) as f:
        f.write(save(state, metadata=meta))


def load_real_frame_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> RealFrameModel:
    """The model shipped with msdm (``msdm/assets/real_frame_detector.safetensors``), or the file at ``path``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if path is None:
        source = resources.files("msdm") / "assets" / DEFAULT_WEIGHTS
        path = Path(str(source))
        if not path.is_file():
            raise FileNotFoundError(f"the real-frame detector weights {DEFAULT_WEIGHTS} are missing from msdm/assets: "
                                    "reinstall msdm, or train them with `python -m msdm.metrics.adherence.train_real_detector`")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"real-frame detector weights {path} not found (train them: python -m "
                                "msdm.metrics.adherence.train_real_detector --out PATH)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    arch = json.loads(meta.get("architecture", "{}"))
    net = RealFrameNet(tuple(arch.get("widths", (16, 32, 48, 64))), arch.get("overlay_channels", 8))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()})
    net.eval().requires_grad_(False).to(device)
    return RealFrameModel(net, {**RealFrameModel(net).thresholds, **json.loads(meta.get("thresholds", "{}"))},
                          json.loads(meta.get("record", "{}")))
