"""BiomedCLIP image features (FBD, Fidelity, Agreement, Diversity); the interface is :mod:`msdm.metrics.realism.extractor`.

**BiomedCLIP** (the challenge's feature, ``submission_task2.py``): the image tower's CLS token of the last hidden
state, 768-d, before the 512-d projection and not normalised. Sources:

* the transformers port ``ikim-uk-essen/BiomedCLIP_ViT_patch16_224`` (default; a plain ``ViTModel``, the script's
  ``last_hidden_state[:, 0, :]``), or a local folder of it;
* open_clip ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` or ``local-dir:/path`` (or a folder
  holding ``open_clip_config.json``): ``model.visual.trunk(x)``, the timm ViT's CLS after its final norm. Only the
  image tower is built, so a local copy works offline without the PubMedBERT text config.

Preprocessing is the reference's for every source (the transformers port's ``ViTImageProcessor``, PIL backend):
``Image.open(p).convert("RGB")``, resize straight to 224×224 with PIL bilinear (no crop, aspect not kept), ×1/255,
normalise with mean = std = 0.5. (open_clip's own BiomedCLIP transform — bicubic, centre crop, OpenAI mean/std — is
deliberately not used, so that numbers compare with the paper. Recent transformers default to a torchvision backend
whose resize differs from PIL's by up to one grey level at some pixels; PIL is what the challenge ran with.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from msdm.hub import MissingWeightsError, is_local, pretrained_source, resolve
from msdm.metrics.realism.extractor import FeatureExtractor, to_uint8_images

DEFAULT_BIOMEDCLIP = "ikim-uk-essen/BiomedCLIP_ViT_patch16_224"  # the challenge script's model
OPEN_CLIP_BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


# ----------------------------------------------------------------------------------------------------------------
# BiomedCLIP
# ----------------------------------------------------------------------------------------------------------------


def biomedclip_preprocess(images, size: int = 224) -> torch.Tensor:
    """The challenge's BiomedCLIP preprocessing: PIL bilinear resize straight to size×size, /255, (x − 0.5)/0.5."""
    from PIL import Image

    batch = []
    for a in to_uint8_images(images):
        im = Image.fromarray(a).resize((size, size), Image.BILINEAR)
        x = np.asarray(im, dtype=np.float32) / 255.0
        batch.append(((x - 0.5) / 0.5).transpose(2, 0, 1))
    return torch.from_numpy(np.ascontiguousarray(np.stack(batch)))


def _open_clip_files(source: str, local_files_only: bool | None) -> tuple[Path, Path]:
    """(open_clip_config.json, weights file) of an open_clip ``hf-hub:``/``local-dir:`` source or local folder."""
    if source.startswith("hf-hub:"):
        repo = source[len("hf-hub:"):]
        from huggingface_hub import hf_hub_download

        _, lfo = resolve(repo, local_files_only)
        with pretrained_source(repo, "open_clip BiomedCLIP"):
            cfg = hf_hub_download(repo, "open_clip_config.json", local_files_only=lfo)
            last = None
            for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                try:
                    return Path(cfg), Path(hf_hub_download(repo, fname, local_files_only=lfo))
                except Exception as e:  # noqa: BLE001 - try the next file name, re-raise the last miss below
                    last = e
            raise last
    folder = Path(os.path.expanduser(source[len("local-dir:"):] if source.startswith("local-dir:") else source))
    cfg = folder / "open_clip_config.json"
    if not cfg.is_file():
        raise MissingWeightsError(
            f"open_clip model folder '{folder}' has no open_clip_config.json. Download one on a machine with network "
            f"(huggingface-cli download {OPEN_CLIP_BIOMEDCLIP[len('hf-hub:'):]} --local-dir /path/to/BiomedCLIP) "
            "and pass local-dir:/path/to/BiomedCLIP."
        )
    preferred = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                 "model.safetensors", "pytorch_model.bin"]
    for name in preferred:
        if (folder / name).is_file():
            return cfg, folder / name
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not found:
        raise MissingWeightsError(f"open_clip model folder '{folder}' has a config but no weights file")
    return cfg, found[0]


def _load_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


class _OpenCLIPImageTrunk(nn.Module):
    """The image tower of an open_clip model with a timm trunk (BiomedCLIP), built and loaded without its text tower."""

    def __init__(self, source: str, local_files_only: bool | None = None):
        super().__init__()
        import open_clip.model as oc_model

        cfg_path, weights_path = _open_clip_files(source, local_files_only)
        config = json.loads(Path(cfg_path).read_text())
        model_cfg = config.get("model_cfg", config)
        vision_cfg = dict(model_cfg["vision_cfg"])
        if "timm_model_name" not in vision_cfg:
            raise ValueError(f"{source}: only open_clip models with a timm image trunk (like BiomedCLIP) are supported")
        vision_cfg["timm_model_pretrained"] = False  # never fetch ImageNet weights; the CLIP weights load below
        visual = oc_model._build_vision_tower(model_cfg["embed_dim"], vision_cfg,
                                              quick_gelu=model_cfg.get("quick_gelu", False))
        state = {k[len("visual."):]: v for k, v in _load_weights(Path(weights_path)).items() if k.startswith("visual.")}
        if not state:
            raise ValueError(f"{weights_path}: no 'visual.*' weights in this open_clip checkpoint")
        visual.load_state_dict(state, strict=True)
        self.trunk = visual.trunk  # timm ViT: forward() = CLS after the final norm (global_pool 'token'), head Identity
        self.image_size = vision_cfg.get("image_size", 224)
        self.feature_dim = int(self.trunk.num_features)

    def forward(self, x):
        return self.trunk(x)


class _TransformersImageCLS(nn.Module):
    """A transformers vision model (the BiomedCLIP ``ViTModel`` port); feature = ``last_hidden_state[:, 0]``."""

    def __init__(self, source: str, local_files_only: bool | None = None):
        super().__init__()
        from transformers import AutoModel

        path, lfo = resolve(source, local_files_only)
        with pretrained_source(source, "BiomedCLIP (transformers port)"):
            self.model = AutoModel.from_pretrained(path, local_files_only=lfo, trust_remote_code=False)
        cfg = self.model.config
        cfg = getattr(cfg, "vision_config", cfg)
        self.image_size = int(getattr(cfg, "image_size", 224))
        self.feature_dim = int(cfg.hidden_size)

    def forward(self, x):
        return self.model(pixel_values=x).last_hidden_state[:, 0, :]


def _biomedclip_backend(source: str) -> str:
    if source.startswith(("hf-hub:", "local-dir:")):
        return "open_clip"
    if is_local(source) and (Path(os.path.expanduser(source)) / "open_clip_config.json").is_file():
        return "open_clip"
    return "transformers"


class BiomedCLIPExtractor(FeatureExtractor):
    """BiomedCLIP image features as in the MEDVQA-GI script: CLS of the last hidden state (768-d, raw).

    ``source``: a transformers id or folder (default :data:`DEFAULT_BIOMEDCLIP`), or an open_clip ``hf-hub:``/
    ``local-dir:`` name or folder. ``backend``: ``"auto"`` (from ``source``), ``"transformers"`` or ``"open_clip"``.
    A model that is neither local nor cached raises :class:`msdm.hub.MissingWeightsError` naming the offline fix.
    """

    name = "biomedclip"

    def __init__(self, source: str = DEFAULT_BIOMEDCLIP, backend: str = "auto", local_files_only: bool | None = None):
        super().__init__()
        source = str(source)
        backend = _biomedclip_backend(source) if backend == "auto" else backend
        if backend == "open_clip":
            self.model = _OpenCLIPImageTrunk(source, local_files_only)
        elif backend == "transformers":
            self.model = _TransformersImageCLS(source, local_files_only)
        else:
            raise ValueError(f"backend must be 'auto', 'transformers' or 'open_clip', got {backend!r}")
        self.source, self.backend = source, backend
        self.image_size = int(self.model.image_size if isinstance(self.model.image_size, int)
                              else self.model.image_size[0])
        self.feature_dim = self.model.feature_dim
        self._freeze()

    def preprocessing_config(self) -> dict:
        return {"resize": [self.image_size, self.image_size], "resample": "PIL.BILINEAR", "crop": None,
                "rescale": "1/255", "mean": [0.5] * 3, "std": [0.5] * 3}

    def preprocess(self, images) -> torch.Tensor:
        return biomedclip_preprocess(images, self.image_size)

    def forward(self, pixel_values):
        return self.model(pixel_values)

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source, "backend": self.backend}
