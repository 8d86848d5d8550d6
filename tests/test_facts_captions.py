"""Captions from facts use only the phrasings of the 483 MEDVQA-GI 2024 prompts (or list joins of them), and the one
grammar reads back what it writes."""

import itertools
import re

import pytest

from msdm.facts import fact_sentences, parse_prompt
from msdm.facts.captions import FACT_ORDER, compose_caption, is_prompt_sentence, join_items
from msdm.facts.grammar import FACT_KEYS
from msdm.facts.vocabulary import (
    CAPTION_LOCATION_ORDER,
    INSTRUMENT_KINDS,
    LOCATIONS,
    PARIS_TYPES,
    POLYP_SIZES,
    PROMPT_POLYP_COUNTS,
)


@pytest.fixture(scope="module")
def real_prompts(shared_data):
    path = shared_data / "prompts" / "medvqa_gi_2024_dev_unique_prompts.txt"
    prompts = [p.strip() for p in path.read_text().splitlines() if p.strip()]
    assert len(prompts) == 483
    return prompts


def _subsets(items, max_size=None):
    for k in range(1, (max_size or len(items)) + 1):
        yield from itertools.combinations(items, k)


# Colours are stated only for the synthetic scenes (pink, pink and red); a real frame's captions state none. The real
# prompts list colours in no fixed order, so colour lists beyond these are not joins in the prompts' style.
SCENE_COLORS = ("pink", "red")


def every_sentence() -> set[str]:
    """Every sentence a caption can contain: each fact alone, over its whole value range."""
    out = set()
    values = {
        "procedure": ["colonoscopy", "gastroscopy"], "text": [True, False], "box": [True, False],
        "polyp": [True, False], "polyp_count": list(range(0, 20)), "instrument_count": list(range(0, 5)),
        "instrument": [True, False],
        "polyp_sizes": list(_subsets(POLYP_SIZES)), "polyp_paris": list(_subsets(PARIS_TYPES)),
        "polyp_colors": list(_subsets(SCENE_COLORS)), "polyp_locations": list(_subsets(LOCATIONS)),
        "instrument_kinds": list(_subsets(INSTRUMENT_KINDS)), "instrument_locations": list(_subsets(LOCATIONS)),
    }
    assert set(values) == set(FACT_KEYS)
    for key, vals in values.items():
        for v in vals:
            out.update(fact_sentences({key: v}))
    return out


def _list_join_of(sentence: str, prompts: list[str]) -> bool:
    """An independent reading of "a list join of the real prompts": the sentence is ``prefix + items + "."`` where a
    real prompt starts with the same prefix, every item occurs in a real prompt after that prefix, and the joins are
    the prompts' own (", " and a final " and "; instrument kinds: a bare "and")."""
    for p in prompts:
        for cut in (m.end() for m in re.finditer(r"(?:size|located in the|colou?rs?|type|containing) ", p)):
            prefix = p[:cut]
            if not sentence.startswith(prefix) or not sentence.endswith("."):
                continue
            body = sentence[len(prefix):-1]
            items = re.split(r", | and |and(?=[a-z])", body) if "containing" in prefix else re.split(r", | and ", body)
            tails = [q[len(prefix):-1] for q in prompts if q.startswith(prefix)]
            if all(any(re.search(rf"(?:^|, | and |and){re.escape(i)}(?:$|, | and |and)", t) for t in tails)
                   for i in items):
                return True
    return False


def test_every_sentence_is_a_real_prompt_or_a_list_join_of_them(real_prompts):
    sentences = every_sentence()
    real = set(real_prompts)
    literal = sentences & real
    joins = sentences - real
    assert len(literal) >= 60  # every single-fact phrasing comes straight from the file
    for s in sorted(joins):
        assert _list_join_of(s, real_prompts), s
        assert is_prompt_sentence(s, real_prompts), s
    # the negations the captions need are real prompts, verbatim
    for s in ("Generate an image not containing a green/black box artefact.", "Generate an image with no polyps.",
              "Generate an image not containing text.", "Generate an image with no instruments."):
        assert s in sentences and s in real
    # a sentence outside the grammar is not accepted
    assert not is_prompt_sentence("Generate an image with an abnormality located in the middle.", real_prompts)
    assert not is_prompt_sentence("Generate an image with 7 polyps.", real_prompts)  # no prompt states 7


def test_counts_stated_only_where_a_prompt_states_them(real_prompts):
    for n in range(0, 20):
        sents = fact_sentences({"polyp_count": n})
        said = {"Generate an image with no polyps.", "Generate an image with 1 polyp.",
                f"Generate an image with {n} polyps."} & set(sents)
        if n in PROMPT_POLYP_COUNTS:
            assert len(said) == 1 and said <= set(real_prompts), n
        else:
            assert not said, n
            assert sents == ["Generate an image containing a polyp."]  # still true


def test_parse_reads_back_what_fact_sentences_writes():
    facts = {"procedure": "colonoscopy", "text": False, "box": True, "polyp": True, "polyp_count": 2,
             "polyp_sizes": ("< 5mm", ">20mm"), "polyp_locations": ("center", "upper-left", "lower-center")}
    sents = fact_sentences(facts)
    assert len(sents) == len(facts)
    parsed = parse_prompt(" ".join(sents))
    assert not parsed["unparsed"] and not parsed["conflicts"]
    for k, v in facts.items():
        assert parsed[k] == v, k
    # one fact per sentence, in FACT_ORDER
    order = [next(k for k in FACT_ORDER if parse_prompt(s)[k] is not None) for s in sents]
    assert order == sorted(order, key=FACT_ORDER.index)


def test_fact_sentences_rejects_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match="vocabulary"):
        fact_sentences({"polyp_locations": ("middle",)})
    with pytest.raises(ValueError, match="unknown fact keys"):
        fact_sentences({"colour": "pink"})
    assert join_items(["a", "b", "c"]) == "a, b and c"


def test_compose_caption_joins_distinct_true_sentences_as_sentences():
    import numpy as np

    sents = fact_sentences({"text": True, "box": False, "polyp_count": 1, "polyp_sizes": ("5-10mm",)})
    seen_k = set()
    for seed in range(40):
        cap = compose_caption(sents, np.random.default_rng(seed), max_facts=8)
        parts = [p + "." for p in cap.split(". ") if p]
        parts[-1] = parts[-1].rstrip(".") + "."
        assert len(set(parts)) == len(parts) and set(parts) <= set(sents)
        seen_k.add(len(parts))
        assert cap == compose_caption(sents, np.random.default_rng(seed), max_facts=8)  # deterministic
    assert seen_k == set(range(1, len(sents) + 1))
    assert compose_caption(sents, np.random.default_rng(0), max_facts=1) in sents


def test_vocabulary_matches_the_real_prompts(real_prompts):
    text = "\n".join(real_prompts)
    for s in POLYP_SIZES:
        assert f"size {s}." in text or f"size {s} and" in text or f"{s}," in text
    for n in PROMPT_POLYP_COUNTS[2:]:
        assert f"Generate an image with {n} polyps." in real_prompts
    # every location list of the abnormality prompts is in CAPTION_LOCATION_ORDER
    for p in real_prompts:
        m = re.match(r"Generate an image with an an abnormality located in the (.*)\.$", p)
        if m:
            cells = re.split(r", | and ", m.group(1))
            assert cells == sorted(cells, key=CAPTION_LOCATION_ORDER.index), p


def test_the_synthetic_scenes_captions_are_the_same_grammar():
    """fact_sentences of a scene's facts are exactly its true captions (msdm.synthetic.captions.captions_for), less
    the "with N findings" phrasing of the polyp count that only the scenes add."""
    import numpy as np

    from msdm.synthetic.captions import captions_for
    from msdm.synthetic.prompt_scenes import scene_facts
    from msdm.synthetic.scene import sample_attributes

    for i in range(200):
        attrs = sample_attributes(np.random.default_rng(i))
        captions = captions_for(attrs)
        assert set(fact_sentences(scene_facts(attrs))) == {c for c in captions if "finding" not in c}
