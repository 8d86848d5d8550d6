"""MSDM size presets, DiT-style: one small factory per size, collected in :data:`PRESETS`.

``paper`` is what the reference code builds (Prompt to Polyp §4.2.1; THunderCondOR/ImageCLEFmed-MEDVQA-GI-2024-MMCP-Team
``train_msdm_vae.py`` / ``train_msdm_unet.py``): VAE 13.37 M parameters, U-Net 326.5 M with CLIP ViT-L/14 (768-d).
``small`` trains on 2 CPU cores in minutes (the offline quickstart); ``tiny`` is for tests.

A preset fixes the VAE and U-Net hyper-parameters and the default training resolution; the text encoder is chosen
separately and its hidden size is filled in as ``text_embed_dim`` when the U-Net is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msdm.errors import InputError


@dataclass(frozen=True)
class Preset:
    name: str
    vae: dict = field(default_factory=dict)  # MSDMVAE kwargs
    unet: dict = field(default_factory=dict)  # MSDMUNet kwargs except text_embed_dim
    resolution: int = 256  # training image side in pixels
    text_encoder: str = "openai/clip-vit-large-patch14"  # the text encoder the preset was designed with
    note: str = ""


def msdm_paper() -> Preset:
    return Preset(
        name="paper",
        vae=dict(latent_channels=8, block_out_channels=(64, 128, 256, 512), norm_num_groups=8, deep_supervision=1),
        unet=dict(
            in_channels=8, out_channels=8, block_out_channels=(256, 256, 512, 1024), layers_per_block=2,
            norm_num_groups=32, dropout=0.1, time_proj_dim=256, time_embed_dim=1024, num_attention_heads=8,
        ),
        resolution=256,
        note="reference architecture; 256² images → 32×32×8 latents",
    )


def msdm_small() -> Preset:
    # Sized for the offline quickstart (≤ 10 min on 2 CPU cores, both stages): f = 4 (three VAE levels) so that 64²
    # images still give 16×16 latents; a U-Net an eighth of the paper's width (4.3 M parameters with MiniLM).
    return Preset(
        name="small",
        vae=dict(latent_channels=4, block_out_channels=(16, 32, 64), norm_num_groups=8, deep_supervision=1),
        unet=dict(
            in_channels=4, out_channels=4, block_out_channels=(32, 32, 64, 128), layers_per_block=1,
            norm_num_groups=8, dropout=0.0, time_proj_dim=32, time_embed_dim=128, num_attention_heads=4,
        ),
        resolution=64,
        text_encoder="builtin:all-MiniLM-L6-v2",
        note="CPU quickstart; 64² images → 16×16×4 latents",
    )


def msdm_tiny() -> Preset:
    return Preset(
        name="tiny",
        vae=dict(latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4, deep_supervision=1),
        unet=dict(
            in_channels=4, out_channels=4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
            norm_num_groups=8, dropout=0.0, time_proj_dim=16, time_embed_dim=32, num_attention_heads=2,
        ),
        resolution=32,
        text_encoder="builtin:all-MiniLM-L6-v2",
        note="unit tests; 32² images → 16×16×4 latents",
    )


PRESETS = {"paper": msdm_paper, "small": msdm_small, "tiny": msdm_tiny}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise InputError(f"unknown MSDM preset {name!r}: choose one of {', '.join(sorted(PRESETS))} "
                         "(msdm presets lists them)") from None


def build_vae(preset: str | Preset, **overrides):
    from msdm.models.vae import MSDMVAE

    p = get_preset(preset) if isinstance(preset, str) else preset
    return MSDMVAE(**{**p.vae, **overrides})


def build_unet(preset: str | Preset, text_embed_dim: int, **overrides):
    from msdm.models.unet import MSDMUNet

    p = get_preset(preset) if isinstance(preset, str) else preset
    return MSDMUNet(**{**p.unet, "text_embed_dim": text_embed_dim, **overrides})


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


CACHE_FILE = "preset_parameters.json"  # in msdm/assets: the table for the default text sizes


def presets_fingerprint() -> str:
    """SHA-256 of every preset's definition: the cached table is used only for exactly these presets."""
    import hashlib

    return hashlib.sha256(repr([get_preset(n) for n in sorted(PRESETS)]).encode()).hexdigest()[:16]


def _cached_table() -> list[dict] | None:
    import json
    from importlib import resources

    try:
        cached = json.loads(resources.files("msdm").joinpath("assets", CACHE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return cached["rows"] if cached.get("fingerprint") == presets_fingerprint() else None


def preset_parameter_table(text_embed_dims: dict[str, int] | None = None, use_cache: bool = True) -> list[dict]:
    """Parameter counts per preset and component, built on the meta device (no memory, no weights).

    ``text_embed_dims`` maps preset name → text hidden size (default: 768 for ``paper``, 384 otherwise). For the
    default sizes the table comes from ``msdm/assets/preset_parameters.json`` when it was computed from exactly these
    presets (:func:`presets_fingerprint`), so ``msdm presets`` does not import torch and diffusers to print it;
    ``tests/test_models.py`` recomputes it from the models (``python -m msdm.models.presets`` rewrites it).
    """
    if use_cache and not text_embed_dims:
        cached = _cached_table()
        if cached is not None:
            return cached
    import torch

    dims = {"paper": 768, **(text_embed_dims or {})}
    rows = []
    for name in PRESETS:
        p = get_preset(name)
        d = dims.get(name, 384)
        with torch.device("meta"):
            vae, unet = build_vae(p), build_unet(p, d)
        rows.append(
            dict(
                preset=name, resolution=p.resolution, text_encoder=p.text_encoder, text_embed_dim=d,
                vae=count_parameters(vae), unet=count_parameters(unet), note=p.note,
            )
        )
    return rows


if __name__ == "__main__":  # python -m msdm.models.presets: rewrite the cached table (after changing a preset)
    import json
    from pathlib import Path

    out = Path(__file__).resolve().parents[1] / "assets" / CACHE_FILE
    out.write_text(json.dumps({"fingerprint": presets_fingerprint(), "rows": preset_parameter_table(use_cache=False)},
                              indent=1) + "\n")
    print(f"wrote {out}")
