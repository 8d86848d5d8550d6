"""The classifiers of the utility experiment (pure torch): a small CNN and torchvision's ResNet-18.

The question is whether synthetic images help *a* classifier, so the networks are deliberately standard:

* ``small-cnn`` — four conv(3×3)–GroupNorm–ReLU–max-pool stages (width w, 2w, 4w, 4w), global average pooling,
  dropout, a linear head. Trains from scratch in seconds on 32–64 px images on a CPU (tests, the synthetic task).
  GroupNorm, not BatchNorm: with a few dozen images an epoch is a handful of steps, BatchNorm's running statistics
  lag behind the weights, and the eval-mode network of an early best checkpoint outputs one class for every image
  (measured on the synthetic task: balanced accuracy 0.50 at AUROC 0.76–0.87; GroupNorm has no running statistics).
* ``resnet18`` — torchvision's ResNet-18 (He et al. 2016), random initialisation by default (offline). With
  ``weights`` (a local ``.pth``/``.pt``/``.safetensors`` state dict, e.g. torchvision's ImageNet file copied to
  the machine) the backbone starts from it and a new head is fitted; inputs are then normalised with the ImageNet
  statistics those weights expect.

Global average pooling is a plain mean over H, W (not ``AdaptiveAvgPool2d``, whose CUDA backward has no
deterministic implementation), so ``torch.use_deterministic_algorithms`` runs hold on GPUs too.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

ARCHS = ("small-cnn", "resnet18")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def small_cnn(num_outputs: int, width: int = 32, in_channels: int = 3, dropout: float = 0.2) -> nn.Sequential:
    widths = [width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.GroupNorm(min(4, w), w), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        c = w
    layers += [GlobalAvgPool(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, num_outputs)]
    return nn.Sequential(*layers)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or ``torch.load(weights_only=True)`` (never pickle code); unwraps
    ``{"state_dict": ...}`` / ``{"model": ...}`` containers."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"classifier weights {p} not found (pass a local .pth/.pt/.safetensors state dict)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def resnet18(num_outputs: int, weights: str | None = None) -> nn.Module:
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None)
    if weights:
        sd = {k.removeprefix("module."): v for k, v in load_state_dict_file(weights).items()}
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # a new head for this task
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{weights} is not a ResNet-18 state dict: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}")
    model.avgpool = GlobalAvgPool()
    model.fc = nn.Linear(model.fc.in_features, num_outputs)
    return model


def build_classifier(arch: str, num_outputs: int, width: int = 32, weights: str | None = None) -> nn.Module:
    if arch == "small-cnn":
        if weights:
            raise ValueError("weights are for arch='resnet18'; the small CNN always starts from random weights")
        return small_cnn(num_outputs, width)
    if arch == "resnet18":
        return resnet18(num_outputs, weights)
    raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")


class InputNorm(nn.Module):
    """[-1, 1] pixels (the batch convention) → what the network expects (ImageNet statistics for pretrained weights)."""

    def __init__(self, imagenet: bool):
        super().__init__()
        self.imagenet = imagenet
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.imagenet:
            return x
        return ((x + 1) / 2 - self.mean) / self.std
