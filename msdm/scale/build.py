"""Random-weight folders of the generators at full width and reduced depth (:mod:`msdm.scale.specs`).

Each writer saves with the stock class's ``save_pretrained`` (atomically), so ``KandinskyLoRAModule``,
``FluxLoRAModule`` and ``MSDMUNetModule`` load the folders exactly as they load a local copy of the hub model, and
the stock ``KandinskyV22PriorPipeline`` / ``KandinskyV22Pipeline`` / ``FluxPipeline`` load them back with a LoRA file.
Weights are stored in the dtype the shipped config trains them in (``frozen_dtype``: bf16 for Kandinsky and FLUX,
fp32 for MSDM, whose config trains in ``32-true``), built directly in that dtype to halve memory and time.

Tokenizers are the tiny offline ones of :mod:`msdm.testing` (the real vocabularies cannot be downloaded here); their
ids index the real-size embedding tables, and they pad to the real lengths (CLIP 77, T5 ``max_sequence_length``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from msdm.io import atomic_directory
from msdm.lora import published as pub
from msdm.scale.specs import get_spec


def _clip_tokenizer(model_max_length: int = 77):
    from msdm.testing import write_tiny_clip_tokenizer

    with tempfile.TemporaryDirectory() as d:
        return write_tiny_clip_tokenizer(d, model_max_length=model_max_length)


def write_msdm(path: str | os.PathLike, seed: int = 0, depth: str | dict = "reduced") -> dict[str, str]:
    """``path/vae`` (the paper preset's VAE, whole) and ``path/text_encoder`` (CLIP ViT-L/14 text tower, reduced depth,
    tiny tokenizer); returns both paths. The U-Net is built by ``MSDMUNetModule`` itself (``unet_overrides``)."""
    spec = get_spec("msdm")
    path = Path(path)
    torch.manual_seed(seed)
    out = {}
    with atomic_directory(path / "vae") as tmp:
        spec.build("vae").save_pretrained(tmp, safe_serialization=True)
    out["vae"] = str(path / "vae")
    te_depth = depth if not isinstance(depth, dict) else {k: v for k, v in depth.items() if k == "num_hidden_layers"}
    with atomic_directory(path / "text_encoder") as tmp:
        spec.build("text_encoder", te_depth).save_pretrained(tmp, safe_serialization=True)
        _clip_tokenizer(pub.CLIP_VIT_L14_TEXT["max_position_embeddings"]).save_pretrained(tmp)
    out["text_encoder"] = str(path / "text_encoder")
    return out


def write_kandinsky_prior(path: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                          depth: str = "reduced") -> str:
    """A ``KandinskyV22PriorPipeline`` folder: PriorTransformer, CLIP ViT-bigG-14 text and image towers (1280-d
    projections), the published image processor and UnCLIP scheduler, a tiny CLIP tokenizer (77 tokens)."""
    from diffusers import KandinskyV22PriorPipeline, UnCLIPScheduler
    from transformers import CLIPImageProcessor

    spec = get_spec("kandinsky-prior")
    torch.manual_seed(seed)
    prior = spec.build("prior", depth, dtype)
    # The published prior stores the CLIP image-embedding statistics it was trained on; random weights have none,
    # and zeros would make its normalisation divide by zero.
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
        prior.clip_mean.zero_()
    pipe = KandinskyV22PriorPipeline(
        prior=prior, image_encoder=spec.build("image_encoder", depth, dtype),
        text_encoder=spec.build("text_encoder", depth, dtype), tokenizer=_clip_tokenizer(),
        scheduler=UnCLIPScheduler.from_config(pub.KANDINSKY22_PRIOR_SCHEDULER),
        image_processor=CLIPImageProcessor(**pub.KANDINSKY22_PRIOR_IMAGE_PROCESSOR),
    )
    with atomic_directory(path) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return str(path)


def write_kandinsky_decoder(path: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                            depth: str = "reduced") -> str:
    """A ``KandinskyV22Pipeline`` folder: the decoder U-Net (image-embedding conditioning), MoVQ, DDPM scheduler."""
    from diffusers import DDPMScheduler, KandinskyV22Pipeline

    spec = get_spec("kandinsky-decoder")
    torch.manual_seed(seed)
    pipe = KandinskyV22Pipeline(unet=spec.build("unet", depth, dtype), movq=spec.build("movq", depth, dtype),
                                scheduler=DDPMScheduler.from_config(pub.KANDINSKY22_DECODER_SCHEDULER))
    with atomic_directory(path) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return str(path)


def write_flux(path: str | os.PathLike, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
               depth: str = "reduced") -> str:
    """A ``FluxPipeline`` folder of FLUX.1-dev's architecture: transformer (3072-d, guidance embedding), 16-channel
    VAE, CLIP-L text (pooled 768-d), T5-XXL encoder (4096-d), tiny tokenizers (CLIP 77, T5 512 tokens)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from msdm.testing import build_word_tokenizer

    spec = get_spec("flux")
    torch.manual_seed(seed)
    pipe = FluxPipeline(
        transformer=spec.build("transformer", depth, dtype), vae=spec.build("vae", depth, dtype),
        text_encoder=spec.build("text_encoder", depth, dtype), tokenizer=_clip_tokenizer(),
        text_encoder_2=spec.build("text_encoder_2", depth, dtype),
        tokenizer_2=build_word_tokenizer(kind="t5", model_max_length=512),
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(pub.FLUX1_DEV_SCHEDULER),
    )
    with atomic_directory(path) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return str(path)


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters as stored (``numel × element size``; buffers such as position ids, a few
    hundred bytes, are not weights)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())
