"""A small CNN that sees what the pixel detectors cannot: polyps (presence, count, size classes, location cells),
instrument kinds and the procedure of a synthetic scene.

Polyps have the mucosa's colours, so no colour rule finds them (docs/synthetic-data.md, Detectors); this network is
trained on renders of :mod:`msdm.synthetic.render` with blur / noise / JPEG / VAE-like smoothing and colour
augmentation by :mod:`msdm.synthetic.train_polyp_detector`, and its weights (< 1 MB, safetensors) ship in
``msdm/assets/polyp_detector.safetensors`` with the decision thresholds calibrated on held-out renders and on VAE
reconstructions (stored in the file's metadata, with the training command and the measured accuracies).

Input: float images [B, 3, H, W] in [0, 1] at any resolution; they are resized to 64 px (antialiased), the
resolution it was trained at. Everything runs on CPU, deterministically (no sampling, eval-mode BatchNorm).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from msdm.synthetic.scene import INSTRUMENTS, LOCATIONS, POLYP_SIZES, PROCEDURES

__all__ = ["PolypNet", "PolypDetector", "load_polyp_detector", "DEFAULT_WEIGHTS", "INPUT_SIZE", "MAX_POLYPS"]

INPUT_SIZE = 64  # training resolution; any input is resized to it
MAX_POLYPS = 3  # the scenes draw 0-3 polyps: the count head has MAX_POLYPS + 1 classes
SEG_SIZE = 16  # side of the auxiliary low-resolution polyp mask
DEFAULT_WEIGHTS = "polyp_detector.safetensors"  # in msdm/assets


def _conv(ci: int, co: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class PolypNet(nn.Module):
    """64 px → 32 → 16 → 8 px feature maps (two 3x3 convolutions per scale), then:

    * ``seg``: polyp coverage logits on a 16x16 grid (auxiliary: it teaches *where*, which counting needs);
    * ``cells``: the nine MEDVQA location cells a polyp covers (from the 16x16 features pooled to 3x3);
    * ``count`` (0-3, softmax), ``sizes`` (the four size classes present, multi-label), ``kinds`` (instrument kinds
      present, multi-label) and ``procedure`` (gastroscopy logit) from the pooled 8x8 features.
    """

    def __init__(self, widths: tuple[int, int, int] = (24, 48, 96), hidden: int = 64):
        super().__init__()
        w1, w2, w3 = widths
        self.widths, self.hidden = tuple(widths), int(hidden)
        self.stage1 = nn.Sequential(_conv(3, w1, 2), _conv(w1, w1, 1))  # 32 px
        self.stage2 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2, 1))  # 16 px
        self.stage3 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3, 1))  # 8 px
        self.seg = nn.Conv2d(w2, 1, 1)
        self.cells = nn.Conv2d(w2, 1, 1)
        self.head = nn.Sequential(
            nn.Linear(2 * w3, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, MAX_POLYPS + 1 + len(POLYP_SIZES) + len(INSTRUMENTS) + 1),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: [B, 3, 64, 64] in [-1, 1] → logits (see the class docstring)."""
        f2 = self.stage2(self.stage1(x))
        f3 = self.stage3(f2)
        pooled = torch.cat([f3.mean((2, 3)), f3.amax((2, 3))], dim=1)
        out = self.head(pooled)
        n_c, n_s, n_k = MAX_POLYPS + 1, len(POLYP_SIZES), len(INSTRUMENTS)
        return {
            "count": out[:, :n_c],
            "sizes": out[:, n_c : n_c + n_s],
            "kinds": out[:, n_c + n_s : n_c + n_s + n_k],
            "procedure": out[:, -1],
            "seg": self.seg(f2)[:, 0],
            # max over each cell's area: "does a polyp cover part of it" (adaptive pooling handles 16 / 3)
            "cells": F.adaptive_max_pool2d(self.cells(f2), 3).flatten(1),
        }


def to_input(images: torch.Tensor) -> torch.Tensor:
    """float [B, 3, H, W] in [0, 1] (any H, W) → [B, 3, 64, 64] in [-1, 1], resized with antialiasing."""
    x = images.float()
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1) * 2 - 1


@dataclass
class Thresholds:
    """Decision thresholds on the heads' probabilities (calibrated by the training script)."""

    polyp: float = 0.5  # on P(count > 0)
    sizes: float = 0.5
    cells: float = 0.5
    kinds: float = 0.5
    procedure: float = 0.5  # on P(gastroscopy)


@dataclass
class PolypDetector:
    """:class:`PolypNet` + its calibrated thresholds; :meth:`predict` turns images into decisions."""

    net: PolypNet
    thresholds: Thresholds = field(default_factory=Thresholds)
    metadata: dict = field(default_factory=dict)  # training command, data, measured accuracies

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Head probabilities for float images [B, 3, H, W] in [0, 1]: ``count`` [B, 4] (softmax), ``polyp`` [B],
        ``sizes`` [B, 4], ``cells`` [B, 9], ``kinds`` [B, 3], ``procedure`` [B] (sigmoids), ``seg`` [B, 16, 16]."""
        self.net.eval()
        device = next(self.net.parameters()).device
        parts: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(images), batch_size):
            logits = self.net(to_input(images[start : start + batch_size].to(device)))
            p = {k: torch.sigmoid(v) for k, v in logits.items() if k != "count"}
            p["count"] = torch.softmax(logits["count"], dim=1)
            p["polyp"] = 1 - p["count"][:, 0]
            parts.append({k: v.cpu() for k, v in p.items()})
        if not parts:
            raise ValueError("no images given")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def decide(self, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decisions from :meth:`probabilities`: ``polyp`` bool [B], ``polyp_count`` long [B] (0 when no polyp,
        else the most likely count ≥ 1), ``polyp_sizes`` bool [B, 4] (the most likely one at least when a polyp is
        seen), ``polyp_cells`` bool [B, 9] (likewise), ``instrument_kinds`` bool [B, 3] (thresholded only; the
        caller knows from the pixel detector whether an instrument is there), ``gastroscopy`` bool [B]."""
        t = self.thresholds
        polyp = p["polyp"] >= t.polyp
        count = torch.where(polyp, p["count"][:, 1:].argmax(1) + 1, torch.zeros_like(polyp, dtype=torch.long))
        sizes = _at_least_one(p["sizes"], t.sizes) & polyp[:, None]
        cells = _at_least_one(p["cells"], t.cells) & polyp[:, None]
        return {
            "polyp": polyp,
            "polyp_count": count,
            "polyp_sizes": sizes,
            "polyp_cells": cells,
            "instrument_kinds": p["kinds"] >= t.kinds,
            "gastroscopy": p["procedure"] >= t.procedure,
        }

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decide(self.probabilities(images))

    def to(self, device) -> PolypDetector:
        self.net.to(device)
        return self


def _at_least_one(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """Multi-label decisions, with the most likely label switched on when none passes the threshold."""
    out = prob >= threshold
    top = F.one_hot(prob.argmax(1), prob.shape[1]).bool()
    return out | (top & ~out.any(1, keepdim=True))


# =====================================================================================================================
# Save / load (safetensors + JSON metadata)
# =====================================================================================================================


def save_polyp_detector(detector: PolypDetector, path: str | Path) -> None:
    """Write weights (float16) and metadata (architecture, thresholds, training record) atomically."""
    from safetensors.torch import save

    from msdm.io import atomic_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in detector.net.state_dict().items()}
    meta = {
        "architecture": json.dumps({"widths": list(detector.net.widths), "hidden": detector.net.hidden}),
        "thresholds": json.dumps(detector.thresholds.__dict__),
        "record": json.dumps(detector.metadata),
    }
    with atomic_file(path) as f:
        f.write(save(state, metadata=meta))


def load_polyp_detector(path: str | Path | None = None, device: str | torch.device = "cpu") -> PolypDetector:
    """The detector shipped with msdm (``msdm/assets/polyp_detector.safetensors``), or the file at ``path``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if path is None:
        source = resources.files("msdm") / "assets" / DEFAULT_WEIGHTS
        if not source.is_file():
            raise FileNotFoundError(
                f"the polyp detector weights {DEFAULT_WEIGHTS} are missing from msdm/assets: reinstall msdm, or train "
                "them with `python -m msdm.synthetic.train_polyp_detector` (docs/metrics.md)")
        path = Path(str(source))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"polyp detector weights {path} not found (train them: python -m "
                                "msdm.synthetic.train_polyp_detector --out PATH)")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    arch = json.loads(meta.get("architecture", "{}"))
    net = PolypNet(tuple(arch.get("widths", (24, 48, 96))), arch.get("hidden", 64))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    net.load_state_dict(state)
    net.eval().requires_grad_(False).to(device)
    return PolypDetector(net, Thresholds(**json.loads(meta.get("thresholds", "{}"))),
                         json.loads(meta.get("record", "{}")))


# =====================================================================================================================
# Labels of a render (training targets and test references)
# =====================================================================================================================


def scene_targets(attrs, masks: dict, locations: dict) -> dict[str, np.ndarray]:
    """What the heads should say about a scene: from its attributes, its render masks and
    :func:`msdm.synthetic.captions.scene_locations` (the cells its captions name)."""
    poly = masks["polyp"].astype(np.float32)
    s = poly.shape[0] // SEG_SIZE
    seg = poly[: s * SEG_SIZE, : s * SEG_SIZE].reshape(SEG_SIZE, s, SEG_SIZE, s).mean((1, 3))
    return {
        "count": np.int64(len(attrs.polyps)),
        "sizes": np.array([any(p.size == c for p in attrs.polyps) for c in POLYP_SIZES], np.float32),
        "cells": np.array([c in locations["abnormality"] for c in LOCATIONS], np.float32),
        "kinds": np.array([any(i.kind == k for i in attrs.instruments) for k in INSTRUMENTS], np.float32),
        "procedure": np.float32(attrs.procedure == PROCEDURES[1]),
        "seg": seg.astype(np.float32),
    }
