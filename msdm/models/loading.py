"""Load a trained MSDM VAE / U-Net from whatever a user has: a model folder, a pipeline folder or a checkpoint.

Checkpoints are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling); model folders with
safetensors.

A ``MSDMUNetModule`` checkpoint carries a copy of its VAE (config and weights, :data:`EMBEDDED_VAE`; about 2 % of a
paper-preset checkpoint with its EMA and optimizer state), so it loads and exports from any directory and on any
machine: the VAE the U-Net was trained on, not whatever the saved path holds today. :func:`checkpoint_vae_source`
picks that copy when a checkpoint is loaded; an older checkpoint without one needs its VAE path to exist, or an
explicit ``vae=`` / ``msdm export --vae``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from msdm.errors import InputError, PathNotFoundError
from msdm.models.presets import build_unet, build_vae


def read_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PathNotFoundError(f"checkpoint not found: {path}", path) from None
    except Exception as e:  # a truncated file or a pickle with objects that are not plain data
        raise InputError(f"could not read checkpoint {path} with weights_only=True: {e}") from e


def _apply_ema(params: list[torch.nn.Parameter], ema_state: dict | None) -> None:
    if not ema_state or "shadow_params" not in ema_state:
        return
    shadow = ema_state["shadow_params"]
    if len(shadow) != len(params):
        raise RuntimeError(f"EMA state has {len(shadow)} tensors, the model {len(params)} parameters")
    with torch.no_grad():
        for p, s in zip(params, shadow):
            p.copy_(s.to(p.dtype))


def _submodule_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


EMBEDDED_VAE = "msdm_vae"  # the checkpoint key of a U-Net checkpoint's copy of its VAE (module docstring)


def embed_vae(vae) -> dict:
    """``{"config", "state_dict"}`` of ``vae`` (CPU tensors, plain-data config: loadable with weights_only=True)."""
    config = json.loads(json.dumps(dict(vae.config), default=str))  # a loaded config holds its PosixPath
    return {"config": config, "state_dict": {k: v.detach().to("cpu") for k, v in vae.state_dict().items()}}


def vae_from_embedded(entry: dict):
    from msdm.models.vae import MSDMVAE

    vae = MSDMVAE.from_config(entry["config"])
    vae.load_state_dict(entry["state_dict"])
    return vae


def checkpoint_vae_source(path: str | os.PathLike) -> str | None:
    """Where the VAE of the ``MSDMUNetModule`` checkpoint ``path`` comes from when it is loaded: the checkpoint itself
    (absolute path) when it carries a copy, else the path it was trained with if that exists here; a one-line error
    with the fix otherwise."""
    p = Path(os.path.expanduser(str(path)))
    try:  # memory-mapped: the weights stay on disk while we look at two keys
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        ckpt = read_checkpoint(p)  # the same load, with its one-line errors
    if EMBEDDED_VAE in ckpt:
        return str(p.resolve())
    source = (ckpt.get("hyper_parameters") or {}).get("vae")
    if source is None or Path(os.path.expanduser(str(source))).exists():
        return source
    raise PathNotFoundError(
        f"{p} was trained with the VAE {source}, which does not exist here ({Path(str(source)).absolute()}), and "
        "carries no copy of it (saved by an older msdm): pass the VAE with --vae PATH (msdm export) or "
        "load_from_checkpoint(..., vae=PATH)", source)


def load_vae(source: str | os.PathLike, use_ema: bool = True):
    """An :class:`~msdm.models.vae.MSDMVAE` from a VAE folder, a pipeline folder (``vae/``), a ``MSDMVAEModule``
    Lightning checkpoint (EMA weights when present and ``use_ema``) or a ``MSDMUNetModule`` checkpoint (its copy)."""
    from msdm.models.vae import MSDMVAE

    p = Path(os.path.expanduser(str(source)))
    if p.is_dir():
        if (p / "model_index.json").exists():
            return MSDMVAE.from_pretrained(p, subfolder="vae", use_safetensors=True)
        if (p / "config.json").exists():
            return MSDMVAE.from_pretrained(p, use_safetensors=True)
        raise InputError(f"{p} is neither a VAE folder (config.json) nor a pipeline folder (model_index.json)")
    if not p.is_file():
        raise PathNotFoundError(
            f"VAE source {p.absolute()} does not exist: pass a MSDMVAEModule checkpoint (.ckpt), a VAE folder or a "
            f"pipeline folder", p
        )
    ckpt = read_checkpoint(p)
    if EMBEDDED_VAE in ckpt:  # a U-Net checkpoint's copy of the VAE it was trained on
        return vae_from_embedded(ckpt[EMBEDDED_VAE])
    hp = ckpt.get("hyper_parameters", {})
    vae = build_vae(hp.get("preset", "paper"), in_channels=hp.get("in_channels", 3), out_channels=hp.get("in_channels", 3),
                    **(hp.get("vae_overrides") or {}))
    state = _submodule_state(ckpt["state_dict"], "vae.")
    if not state:
        raise InputError(f"{p} holds no 'vae.*' weights: is it a MSDMVAEModule checkpoint?")
    vae.load_state_dict(state)
    if use_ema:
        _apply_ema([q for q in vae.parameters()], ckpt.get("ema"))
    return vae


def load_unet_from_checkpoint(source: str | os.PathLike, text_embed_dim: int, use_ema: bool = True):
    """The U-Net of a ``MSDMUNetModule`` checkpoint (the checkpoint holds only the U-Net, see the module)."""
    p = Path(os.path.expanduser(str(source)))
    ckpt = read_checkpoint(p)
    hp = ckpt.get("hyper_parameters", {})
    unet = build_unet(hp.get("preset", "paper"), text_embed_dim, **(hp.get("unet_overrides") or {}))
    state = _submodule_state(ckpt["state_dict"], "unet.")
    unet.load_state_dict(state)
    if use_ema:
        _apply_ema([q for q in unet.parameters()], ckpt.get("ema"))
    return unet, hp


def is_pipeline_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    if not (p / "model_index.json").exists():
        return False
    return json.loads((p / "model_index.json").read_text()).get("_class_name") == "MSDMPipeline"
