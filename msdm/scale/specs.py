"""The generators at their published widths, with only the depth cut: one :class:`ScaleSpec` per generator.

Every component config is a published ``config.json`` (:mod:`msdm.lora.published`, which names the hub file of each
dict) or the MSDM ``paper`` preset (:mod:`msdm.models.presets`, Prompt to Polyp §4.2.1). A spec lists the *depth
knobs* — the config keys that count repeated layers or blocks — with their published value and the value the CPU
scale tests build. Nothing else changes: hidden sizes, heads, channels, vocabularies, projection widths, latent
channels, patch sizes and positional ranges are the real ones, so every matrix multiplies real shapes.

====================  ===========================  ==========================================  =========  =======
generator             component                    depth key                                   published  reduced
====================  ===========================  ==========================================  =========  =======
msdm (paper preset)   unet (MSDMUNet)              layers_per_block                                    2        1
                      text_encoder (CLIP ViT-L/14) num_hidden_layers                                  12        1
kandinsky-prior       prior (PriorTransformer)     num_layers                                         20        1
                      text_encoder (CLIP bigG)     num_hidden_layers                                  32        1
                      image_encoder (CLIP bigG)    num_hidden_layers                                  48        1
kandinsky-decoder     unet (UNet2DConditionModel)  layers_per_block                                    3        1
                      movq (VQModel)               layers_per_block                                    2        1
                      image_encoder (CLIP bigG)    num_hidden_layers                                  48        1
flux (FLUX.1-dev)     transformer                  num_layers (double-stream) / num_single_layers  19 / 38  1 / 1
                      text_encoder (CLIP ViT-L/14) num_hidden_layers                                  12        1
                      text_encoder_2 (T5-XXL enc.) num_layers                                         24        1
                      vae (AutoencoderKL)          layers_per_block                                    2        1
====================  ===========================  ==========================================  =========  =======

The MSDM VAE (13.4 M parameters) is built whole. A U-Net keeps all its resolution levels (they set the latent
shapes); ``layers_per_block`` is its depth.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from msdm.lora import published as pub


@dataclass(frozen=True)
class Depth:
    """A config key that counts repeated layers: ``component.key`` is ``full`` when published, ``reduced`` here."""

    component: str
    key: str
    full: int
    reduced: int


@dataclass(frozen=True)
class ScaleSpec:
    """One generator: its components (class name + published config), the one that trains, the depth knobs.

    ``config`` is the shipped training config whose settings (frozen dtype, LoRA rank, resolution, batch size) the
    scale test and ``msdm memory`` follow.
    """

    name: str
    title: str
    trainable: str
    components: dict  # component -> (class name, published config dict)
    depth: tuple[Depth, ...]
    config: str
    sources: tuple[str, ...] = ()

    def knobs(self, component: str | None = None) -> tuple[Depth, ...]:
        """Depth knobs of ``component`` (default: the trainable one)."""
        c = component or self.trainable
        return tuple(d for d in self.depth if d.component == c)

    def component_config(self, component: str, depth: str | dict = "reduced") -> dict:
        """The config of ``component`` at ``depth``: ``"full"``, ``"reduced"`` or ``{key: layers}`` overrides on
        top of the reduced values."""
        cfg = dict(self.components[component][1])
        knobs = self.knobs(component)
        for d in knobs:
            cfg[d.key] = d.full if depth == "full" else d.reduced
        if isinstance(depth, dict):
            unknown = set(depth) - {d.key for d in knobs}
            if unknown:
                raise ValueError(f"{sorted(unknown)} are not depth keys of {self.name}.{component}; "
                                 f"choose from {[d.key for d in knobs]}")
            cfg.update(depth)
        return cfg

    def build(self, component: str, depth: str | dict = "reduced", dtype: torch.dtype | None = None,
              device: str | torch.device | None = None) -> torch.nn.Module:
        """Construct ``component`` with random weights (``device="meta"``: shapes only, no memory)."""
        kind, _ = self.components[component]
        cfg = self.component_config(component, depth)
        with _default_dtype(dtype), torch.device(device or "cpu"):
            return _construct(kind, cfg)


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype | None):
    """Build modules directly in ``dtype`` (half the memory and time of fp32-then-cast for bf16 folders)."""
    old = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _construct(kind: str, cfg: dict) -> torch.nn.Module:
    if kind == "MSDMUNet":
        from msdm.models.unet import MSDMUNet

        return MSDMUNet(**cfg)
    if kind == "MSDMVAE":
        from msdm.models.vae import MSDMVAE

        return MSDMVAE(**cfg)
    import diffusers
    import transformers

    if hasattr(diffusers, kind):
        return getattr(diffusers, kind)(**cfg)
    config_cls = {"CLIPTextModel": "CLIPTextConfig", "CLIPTextModelWithProjection": "CLIPTextConfig",
                  "CLIPVisionModelWithProjection": "CLIPVisionConfig", "T5EncoderModel": "T5Config"}[kind]
    return getattr(transformers, kind)(getattr(transformers, config_cls)(**cfg))


def _msdm_components() -> dict:
    from msdm.models.presets import get_preset

    p = get_preset("paper")
    text_dim = pub.CLIP_VIT_L14_TEXT["hidden_size"]
    return {
        "unet": ("MSDMUNet", {**p.unet, "text_embed_dim": text_dim}),
        "vae": ("MSDMVAE", dict(p.vae)),
        "text_encoder": ("CLIPTextModel", pub.CLIP_VIT_L14_TEXT),
    }


SPECS: dict[str, ScaleSpec] = {
    "msdm": ScaleSpec(
        name="msdm", title="MSDM paper preset: U-Net 326.5 M + VAE 13.4 M, CLIP ViT-L/14 text (768-d), 256²",
        trainable="unet", components=_msdm_components(),
        depth=(Depth("unet", "layers_per_block", 2, 1), Depth("text_encoder", "num_hidden_layers", 12, 1)),
        config="configs/msdm_unet_kvasir.yaml",
        sources=("msdm/models/presets.py (paper)", "openai/clip-vit-large-patch14 config.json text_config"),
    ),
    "kandinsky-prior": ScaleSpec(
        name="kandinsky-prior", title="Kandinsky 2.2 prior: PriorTransformer over CLIP ViT-bigG-14 (1280-d) embeddings",
        trainable="prior",
        components={
            "prior": ("PriorTransformer", pub.KANDINSKY22_PRIOR),
            "text_encoder": ("CLIPTextModelWithProjection", pub.KANDINSKY22_PRIOR_TEXT),
            "image_encoder": ("CLIPVisionModelWithProjection", pub.KANDINSKY22_PRIOR_IMAGE),
        },
        depth=(Depth("prior", "num_layers", 20, 1), Depth("text_encoder", "num_hidden_layers", 32, 1),
               Depth("image_encoder", "num_hidden_layers", 48, 1)),
        config="configs/kandinsky_lora_prior_kvasir.yaml",
        sources=(f"{pub.KANDINSKY22_PRIOR_ID} prior/, text_encoder/, image_encoder/, image_processor/, scheduler/",),
    ),
    "kandinsky-decoder": ScaleSpec(
        name="kandinsky-decoder", title="Kandinsky 2.2 decoder: UNet2DConditionModel (1.25 B) + MoVQ, image-embedding "
        "conditioning", trainable="unet",
        components={
            "unet": ("UNet2DConditionModel", pub.KANDINSKY22_DECODER_UNET),
            "movq": ("VQModel", pub.KANDINSKY22_DECODER_MOVQ),
            "image_encoder": ("CLIPVisionModelWithProjection", pub.KANDINSKY22_PRIOR_IMAGE),
        },
        depth=(Depth("unet", "layers_per_block", 3, 1), Depth("movq", "layers_per_block", 2, 1),
               Depth("image_encoder", "num_hidden_layers", 48, 1)),
        config="configs/kandinsky_lora_decoder_kvasir.yaml",
        sources=(f"{pub.KANDINSKY22_DECODER_ID} unet/, movq/, scheduler/",
                 f"{pub.KANDINSKY22_PRIOR_ID} image_encoder/ (the condition)"),
    ),
    "flux": ScaleSpec(
        name="flux", title="FLUX.1-dev: 3072-d transformer (24 x 128 heads), T5-XXL 4096-d, CLIP-L pooled 768-d, "
        "guidance embedding, 16-channel VAE", trainable="transformer",
        components={
            "transformer": ("FluxTransformer2DModel", pub.FLUX1_DEV_TRANSFORMER),
            "vae": ("AutoencoderKL", pub.FLUX1_DEV_VAE),
            "text_encoder": ("CLIPTextModel", pub.FLUX1_DEV_CLIP_TEXT),
            "text_encoder_2": ("T5EncoderModel", pub.FLUX1_DEV_T5),
        },
        depth=(Depth("transformer", "num_layers", 19, 1), Depth("transformer", "num_single_layers", 38, 1),
               Depth("text_encoder", "num_hidden_layers", 12, 1), Depth("text_encoder_2", "num_layers", 24, 1),
               Depth("vae", "layers_per_block", 2, 1)),
        config="configs/flux_lora_kvasir.yaml",
        sources=(f"{pub.FLUX1_DEV_ID} transformer/, vae/, text_encoder/, text_encoder_2/, scheduler/",),
    ),
}


def get_spec(name: str) -> ScaleSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}; choose one of {sorted(SPECS)}") from None
