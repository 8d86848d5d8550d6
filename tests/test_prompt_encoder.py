"""PromptEncoder: whole-prompt encoding equals encode_text, sentence chunking concatenates each sentence's real
tokens, the memo is exact (and survives overflow), and exported pipelines encode as the module trained."""

import pytest
import torch

from msdm.data.compose import compose_caption
from msdm.models.text_encoder import PromptEncoder, encode_text, load_text_encoder, split_sentences

A = "Generate an image containing text."
B = "Generate an image with no polyps."
C = "Generate an image not containing a green/black box artefact."


@pytest.fixture(scope="module")
def text(tiny_text_encoder):
    return load_text_encoder(tiny_text_encoder, max_length=32)


def test_split_sentences():
    assert split_sentences(f"{A} {B}  {C}") == [A, B, C]
    assert split_sentences(A) == [A]
    assert split_sentences("") == [""]
    assert split_sentences("polyp of size 5-10mm. ok") == ["polyp of size 5-10mm.", "ok"]


def test_whole_prompts_equal_encode_text(text):
    tok, enc = text
    prompts = [A, f"{A} {B}", ""]
    states, mask = PromptEncoder(tok, enc)(prompts)
    ref_states, ref_mask = encode_text(tok, enc, prompts)
    assert torch.equal(states, ref_states) and torch.equal(mask, ref_mask)


def test_sentence_chunks_concatenate_real_tokens(text):
    tok, enc = text
    pe = PromptEncoder(tok, enc, chunking="sentence")
    states, mask = pe([f"{A} {B}", A, ""])
    (sa, ma), (sb, mb) = encode_text(tok, enc, [A]), encode_text(tok, enc, [B])
    na, nb = int(ma.sum()), int(mb.sum())
    # joined: A's real tokens, then B's, then zero padding (masked)
    assert torch.equal(mask[0], torch.tensor([1] * (na + nb) + [0] * (32 - na - nb)))
    torch.testing.assert_close(states[0, :na], sa[0, :na])
    torch.testing.assert_close(states[0, na : na + nb], sb[0, :nb])
    assert torch.all(states[0, na + nb :] == 0)
    # a one-sentence prompt: the same real tokens as whole-prompt encoding
    torch.testing.assert_close(states[1, :na], sa[0, :na])
    assert int(mask[2].sum()) == 2  # "" = [CLS] [SEP], as encode_text
    # truncation at max_length
    long = " ".join([C] * 6)
    s, m = pe([long])
    assert int(m.sum()) == 32 and s.shape == (1, 32, enc.config.hidden_size)


def test_memo_is_exact_and_survives_overflow(text):
    tok, enc = text
    captions = [compose_caption([A, B, C], __import__("numpy").random.default_rng(i), 3) for i in range(12)]
    for chunking in ("none", "sentence"):
        ref = PromptEncoder(tok, enc, chunking=chunking, memo_size=0)
        small = PromptEncoder(tok, enc, chunking=chunking, memo_size=3)  # overflows on almost every call
        for start in range(0, 12, 4):
            batch = captions[start : start + 4] + captions[:2]  # repeats of earlier captions
            s, m = small(batch)
            rs, rm = ref(batch)
            assert torch.equal(m, rm)
            torch.testing.assert_close(s, rs, rtol=0, atol=0)


def test_unet_module_and_exported_pipeline_encode_alike(tiny_text_encoder, tmp_path):
    from lightning_modules import MSDMUNetModule
    from msdm.pipeline import MSDMPipeline

    with pytest.warns(UserWarning, match="UNTRAINED VAE"):
        m = MSDMUNetModule(preset="tiny", text_encoder=tiny_text_encoder, max_length=32, text_chunking="sentence",
                           latent_scaling=1.0)
    prompts = [f"{A} {B}", C]
    s, mk = m.encode_prompts(prompts)
    m.export(str(tmp_path / "pipe"))
    pipe = MSDMPipeline.from_pretrained(str(tmp_path / "pipe"))
    assert pipe.config.text_chunking == "sentence"
    ps, pm = pipe.encode_prompts(prompts)
    assert torch.equal(pm, mk)
    torch.testing.assert_close(ps, s)
    with pytest.raises(ValueError, match="chunking"):
        PromptEncoder(pipe.tokenizer, pipe.text_encoder, chunking="words")
