"""Tiny, offline, random-weight components shared by the tests, the benches and the quickstart.

Nothing here downloads. Every builder writes a *real* folder (``save_pretrained``) so that the code under test
loads it through the same ``from_pretrained`` path a user's local copy of a hub model would take.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# ----------------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------------

# The 23-token BPE vocabulary of transformers' own CLIP tokenizer tests: every word of a real prompt maps to a few
# tokens (mostly <unk>), which is all a shape test of a CLIP-conditioned model needs.
_CLIP_VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>", "t</w>", "low</w>",
               "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>", "<|startoftext|>", "<|endoftext|>"]
_CLIP_MERGES = ["#version: 0.2", "l o", "lo w</w>", "e r</w>", ""]

# Words of the MEDVQA-GI 2024 prompt grammar (from ../shared/data/prompts) plus paraphrase vocabulary, so a tiny
# word-level encoder can tell prompts apart (a CLIP test vocabulary cannot).
MEDVQA_WORDS = sorted(set(
    ", - . / < > 1 2 3 4 5 6 11 16 10mm 20mm 5mm a abnormality an anatomical and artefact artifact barretts biopsy "
    "black blue box brown burgundy cecum center clip clipandtube colitis colonoscopy color colors containing create "
    "depict display displaying finding findings forceps forcepsandmetal forcepsandtube from gastroscopy generate green "
    "grey iia ileum image in injection ink instrument instruments ip is landmark left line located lower metal needle "
    "no not oesophagitis of orange pale paris picture pink polyp polypandoesophagitis polypandulcerative polyps "
    "procedure produce purple pylorus red right rigth show showing size snare snareandmetal snareandtube text the tube "
    "type ulcerative upper violet white with without yellow z one two three single any".split()
))


def write_tiny_clip_tokenizer(path: str | os.PathLike, model_max_length: int = 77):
    """Write a tiny CLIP BPE tokenizer to ``path`` and return it loaded from there."""
    from transformers import CLIPTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(_CLIP_VOCAB)}))
    (path / "merges.txt").write_text("\n".join(_CLIP_MERGES))
    tok = CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=model_max_length)
    tok.save_pretrained(path)
    return tok


def build_word_tokenizer(words: list[str] | None = None, model_max_length: int = 64, kind: str = "bert"):
    """A word-level fast tokenizer over ``words`` (default: :data:`MEDVQA_WORDS`).

    ``kind="bert"`` adds ``[CLS] … [SEP]`` (for tiny BERT encoders); ``kind="t5"`` appends ``</s>`` (for tiny T5).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = list(MEDVQA_WORDS if words is None else words)
    if kind == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        vocab = {t: i for i, t in enumerate(specials + [w for w in words if w not in specials])}
        tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tk.normalizer = normalizers.Lowercase()
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
            model_max_length=model_max_length,
        )
    elif kind == "t5":
        specials = ["<pad>", "</s>", "<unk>"]
        vocab = {t: i for i, t in enumerate(specials + [w for w in words if w not in specials])}
        tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tk.normalizer = normalizers.Lowercase()
        tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length
        )
    else:
        raise ValueError(f"kind must be 'bert' or 't5', got {kind!r}")
    return fast


def write_tiny_text_encoder(path: str | os.PathLike, hidden_size: int = 32, seed: int = 0, model_max_length: int = 64) -> str:
    """Write a tiny random BERT text encoder + word-level tokenizer folder; returns the folder path.

    Loadable with :func:`msdm.models.text_encoder.load_text_encoder` exactly like a hub model's local copy.
    """
    import torch
    from transformers import BertConfig, BertModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_word_tokenizer(model_max_length=model_max_length)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=2 * hidden_size, max_position_embeddings=max(128, model_max_length), pad_token_id=tok.pad_token_id,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def write_tiny_clip_text_encoder(path: str | os.PathLike, hidden_size: int = 32, seed: int = 0, model_max_length: int = 77) -> str:
    """Tiny random ``CLIPTextModel`` + tiny CLIP tokenizer folder (config from diffusers' pipeline tests)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    write_tiny_clip_tokenizer(path, model_max_length=model_max_length)
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=hidden_size, intermediate_size=37, layer_norm_eps=1e-5,
        num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000, projection_dim=hidden_size,
    )
    CLIPTextModel(cfg).save_pretrained(path)
    return str(path)


def build_tiny_pipeline(text_encoder_dir: str | os.PathLike, seed: int = 0, resolution: int = 32):
    """A ``tiny``-preset :class:`~msdm.pipeline.MSDMPipeline` (DDIM) on a tiny text encoder folder, random weights.

    The U-Net's and VAE's output convolutions start at zero (as trained models do not); they get random weights so
    that a test sees the network in the images.
    """
    import torch

    from msdm.generators.samplers import make_sampler
    from msdm.models.presets import build_unet, build_vae
    from msdm.models.text_encoder import load_text_encoder, text_hidden_size
    from msdm.pipeline import MSDMPipeline

    torch.manual_seed(seed)
    tok, te = load_text_encoder(str(text_encoder_dir), max_length=16)
    vae, unet = build_vae("tiny"), build_unet("tiny", text_hidden_size(te))
    torch.nn.init.normal_(unet.conv_out.weight, std=0.2)
    torch.nn.init.normal_(vae.out.weight, std=0.2)
    pipe = MSDMPipeline(vae, unet, te, tok, make_sampler("ddim"), resolution=resolution)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """``../shared/data`` next to the repository (the real sample images); may not exist outside this workplace."""
    env = os.environ.get("MSDM_SHARED_DATA")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def image_text_samples(folder: str | os.PathLike, n: int = 8, size: int = 32, captions: list[str] | None = None) -> list[dict]:
    """The first ``n`` images of ``folder`` (sorted) at ``size``², in the batch convention of docs/CONVENTIONS.md:
    ``{"pixel_values": float [3, size, size] in [-1, 1], "caption": str, "id": str}``; captions cycle."""
    import numpy as np
    import torch
    from PIL import Image

    caps = captions or ["Generate an image containing a polyp.", "Generate an image with 1 polyp.",
                        "Generate an image with 1 finding.", "Generate an image from a colonoscopy procedure."]
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    out = []
    for i, f in enumerate(files):
        a = np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 127.5 - 1
        out.append({"pixel_values": torch.from_numpy(a).permute(2, 0, 1).contiguous(), "caption": caps[i % len(caps)],
                    "id": f.stem})
    return out
