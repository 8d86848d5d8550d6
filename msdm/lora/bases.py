"""Loading the frozen base models by hub id or local folder.

Every component goes through :func:`msdm.hub.resolve` / :func:`msdm.hub.pretrained_source`: a local pipeline
folder (e.g. ``huggingface-cli download kandinsky-community/kandinsky-2-2-prior --local-dir ...``) works offline;
a hub id is read from the Hugging Face cache and downloaded only when allowed; a miss raises
:class:`msdm.hub.MissingWeightsError` naming the offline fix. Weights load through safetensors only.

The layouts are the stock diffusers pipeline folders:

- Kandinsky 2.2 prior: ``prior/ text_encoder/ tokenizer/ image_encoder/ image_processor/ scheduler/``
- Kandinsky 2.2 decoder: ``unet/ movq/ scheduler/``
- FLUX.1: ``transformer/ vae/ text_encoder/ tokenizer/ text_encoder_2/ tokenizer_2/ scheduler/``
"""

from __future__ import annotations

import torch

from msdm.dtypes import DTYPES, parse_dtype  # noqa: E402,F401 - the one dtype table, re-exported
from msdm.hub import pretrained_source, resolve


def _cls(kind: str):
    import diffusers
    import transformers

    return getattr(diffusers, kind, None) or getattr(transformers, kind)


def load_part(
    kind: str,
    name_or_path: str,
    subfolder: str,
    *,
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
):
    """Load one pipeline component ``kind`` (a diffusers or transformers class name) from ``name_or_path/subfolder``.

    Models come back frozen (``requires_grad_(False)``) and in eval mode.
    """
    cls = _cls(kind)
    path, lfo = resolve(name_or_path, local_files_only)
    kwargs: dict = {"subfolder": subfolder, "local_files_only": lfo}
    if revision is not None:
        kwargs["revision"] = revision
    is_model = isinstance(cls, type) and issubclass(cls, torch.nn.Module)
    if is_model:
        kwargs["use_safetensors"] = True
        if dtype is not None:
            # diffusers calls it torch_dtype; transformers >= 5 calls it dtype.
            kwargs["torch_dtype" if cls.__module__.startswith("diffusers") else "dtype"] = dtype
    with pretrained_source(name_or_path, f"{subfolder} of {name_or_path}"):
        obj = cls.from_pretrained(path, **kwargs)
    if is_model:
        obj.requires_grad_(False).eval()
    return obj


# (attribute, class name, subfolder) of each pipeline layout.
KANDINSKY_PRIOR_PARTS = (
    ("prior", "PriorTransformer", "prior"),
    ("text_encoder", "CLIPTextModelWithProjection", "text_encoder"),
    ("tokenizer", "CLIPTokenizer", "tokenizer"),
    ("image_encoder", "CLIPVisionModelWithProjection", "image_encoder"),
    ("image_processor", "CLIPImageProcessor", "image_processor"),
    ("scheduler", "UnCLIPScheduler", "scheduler"),
)
KANDINSKY_DECODER_PARTS = (
    ("unet", "UNet2DConditionModel", "unet"),
    ("movq", "VQModel", "movq"),
    ("scheduler", "DDPMScheduler", "scheduler"),
)
FLUX_PARTS = (
    ("transformer", "FluxTransformer2DModel", "transformer"),
    ("vae", "AutoencoderKL", "vae"),
    ("text_encoder", "CLIPTextModel", "text_encoder"),
    ("tokenizer", "CLIPTokenizer", "tokenizer"),
    ("text_encoder_2", "T5EncoderModel", "text_encoder_2"),
    ("tokenizer_2", "AutoTokenizer", "tokenizer_2"),
    ("scheduler", "FlowMatchEulerDiscreteScheduler", "scheduler"),
)


def load_parts(layout, name_or_path: str, only=None, *, dtype=None, revision=None, local_files_only=None,
               dtypes: dict | None = None) -> dict:
    """Load the components of ``layout`` (one of the ``*_PARTS`` tuples), optionally ``only`` some of them.

    ``dtype`` applies to every model; ``dtypes`` overrides it per attribute (e.g. keep a VAE in fp32).
    """
    out = {}
    for attr, kind, sub in layout:
        if only is not None and attr not in only:
            continue
        d = (dtypes or {}).get(attr, dtype)
        out[attr] = load_part(kind, name_or_path, sub, dtype=d, revision=revision, local_files_only=local_files_only)
    return out
