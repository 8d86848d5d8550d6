"""True captions of a facts dict, worded only as the MEDVQA-GI 2024 prompts are: the inverse of
:func:`msdm.facts.grammar.parse_prompt`.

:func:`fact_sentences` turns a facts dict (the keys of :data:`msdm.facts.grammar.FACT_KEYS`; ``None`` = unknown,
not stated) into one sentence per known fact. Every sentence is one of the 483 unique prompts of the MEDVQA-GI 2024
dev set (``../shared/data/prompts/medvqa_gi_2024_dev_unique_prompts.txt``), negations included ("Generate an image
not containing a green/black box artefact.", "Generate an image with no polyps.", "Generate an image not containing
text."), or a **list join** of them: the prompts list several sizes, locations, Paris types, colours and instrument
kinds in one sentence ("with polyps of size < 5mm and 11-20mm", "located in the center, upper-left and
lower-center"), always in the same item order (:mod:`msdm.facts.vocabulary`) and with the same joins (``", "`` and
a final ``" and "``; kinds with a bare ``"and"``). A list of items the 483 prompts do not happen to hold in that
combination is written the same way; :func:`is_prompt_sentence` recognises exactly these sentences, and
``tests/test_facts_captions.py`` checks every sentence :func:`fact_sentences` can write against the prompt file.
Counts are stated only where a prompt states that count (:data:`~msdm.facts.vocabulary.PROMPT_POLYP_COUNTS`).
Colours are the exception: the real prompts list them in no fixed order, so only the colours captions actually state
(the synthetic scenes' "pink" and "pink and red"; real frames state none) are checked to be prompts.

:func:`compose_caption` joins 1..K of a frame's sentences (seeded), the multi-fact training captions of
:mod:`msdm.data.compose` (``caption_facts``; joined by a space, one sentence per fact, as the PromptEncoder's
``text_chunking="sentence"`` expects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from msdm.data.compose import compose_caption as _compose
from msdm.facts.grammar import FACT_KEYS, parse_prompt
from msdm.facts.vocabulary import (
    CAPTION_LOCATION_ORDER,
    COLORS,
    INSTRUMENT_KINDS,
    PARIS_TYPES,
    POLYP_SIZES,
    PROCEDURES,
    PROMPT_POLYP_COUNTS,
)

__all__ = ["FACT_ORDER", "fact_sentences", "compose_caption", "join_items", "is_prompt_sentence"]

#: The facts :func:`fact_sentences` states, in the order it writes them.
FACT_ORDER: tuple[str, ...] = ("procedure", "text", "box", "polyp", "polyp_count", "polyp_sizes", "polyp_paris",
                               "polyp_colors", "polyp_locations", "instrument_count", "instrument_kinds",
                               "instrument_locations")
PROMPT_INSTRUMENT_COUNTS: tuple[int, ...] = (0, 1, 2, 3)  # "with no instruments" ... "with 3 instruments"


def join_items(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: the real prompts' list style."""
    items = list(items)
    if not items:
        raise ValueError("join_items needs at least one item")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _ordered(values, vocabulary: Sequence[str], key: str) -> list[str]:
    unknown = set(values) - set(vocabulary)
    if unknown:
        raise ValueError(f"{key}: {sorted(unknown)} are not in the prompt vocabulary {tuple(vocabulary)}")
    return [v for v in vocabulary if v in set(values)]


def _count(n: int, singular: str, plural: str) -> str:
    return f"no {plural}" if n == 0 else f"1 {singular}" if n == 1 else f"{n} {plural}"


def fact_sentences(facts: Mapping) -> list[str]:
    """One true MEDVQA-GI sentence per known fact of ``facts`` (order :data:`FACT_ORDER`).

    ``facts`` has the keys of :data:`~msdm.facts.grammar.FACT_KEYS` (missing or ``None``: not stated). A polyp
    count no prompt states (7 to 15, more than 16) gives no count sentence; "containing a polyp" still holds.
    Example: ``fact_sentences({"box": False, "polyp_count": 2})`` →
    ``["Generate an image not containing a green/black box artefact.", "Generate an image containing a polyp.",
    "Generate an image with 2 polyps."]``.
    """
    unknown = set(facts) - set(FACT_KEYS)
    if unknown:
        raise ValueError(f"unknown fact keys {sorted(unknown)}; known: {FACT_KEYS}")
    f = {k: facts.get(k) for k in FACT_KEYS}
    out: list[str] = []
    if f["procedure"] is not None:
        if f["procedure"] not in PROCEDURES:
            raise ValueError(f"procedure must be one of {PROCEDURES}, got {f['procedure']!r}")
        out.append(f"Generate an image from a {f['procedure']} procedure.")
    if f["text"] is not None:
        out.append("Generate an image containing text." if f["text"] else "Generate an image not containing text.")
    if f["box"] is not None:
        out.append("Generate an image containing a green/black box artefact." if f["box"]
                   else "Generate an image not containing a green/black box artefact.")
    count = f["polyp_count"]
    present = f["polyp"] if f["polyp"] is not None else (None if count is None else count > 0)
    if present:
        out.append("Generate an image containing a polyp.")
    if count is not None and int(count) in PROMPT_POLYP_COUNTS:
        out.append(f"Generate an image with {_count(int(count), 'polyp', 'polyps')}.")
    elif count is None and present is False:
        out.append("Generate an image with no polyps.")
    if f["polyp_sizes"]:
        sizes = _ordered(f["polyp_sizes"], POLYP_SIZES, "polyp_sizes")
        out.append(f"Generate an image with a polyp of size {sizes[0]}." if len(sizes) == 1
                   else f"Generate an image with polyps of size {join_items(sizes)}.")
    if f["polyp_paris"]:
        paris = _ordered(f["polyp_paris"], PARIS_TYPES, "polyp_paris")
        out.append(f"Generate a polyp of type paris {paris[0]}." if len(paris) == 1
                   else f"Generate polyps of type {join_items(['paris ' + t for t in paris])}.")
    if f["polyp_colors"]:
        colors = _ordered(f["polyp_colors"], COLORS, "polyp_colors")
        noun = "color" if len(colors) == 1 else "colors"
        out.append(f"Generate an image with an abnormality with the {noun} {join_items(colors)}.")
    if f["polyp_locations"]:
        cells = _ordered(f["polyp_locations"], CAPTION_LOCATION_ORDER, "polyp_locations")
        out.append(f"Generate an image with an an abnormality located in the {join_items(cells)}.")
    n_tools = f["instrument_count"]
    if n_tools is None and f["instrument"] is False:
        n_tools = 0
    if n_tools is not None and int(n_tools) in PROMPT_INSTRUMENT_COUNTS:
        out.append(f"Generate an image with {_count(int(n_tools), 'instrument', 'instruments')}.")
    if f["instrument_kinds"]:
        kinds = _ordered(f["instrument_kinds"], INSTRUMENT_KINDS, "instrument_kinds")
        out.append(f"Generate an image containing {'and'.join(kinds)}.")
    if f["instrument_locations"]:
        cells = _ordered(f["instrument_locations"], CAPTION_LOCATION_ORDER, "instrument_locations")
        out.append(f"Generate an image with an an instrument located in the {join_items(cells)}.")
    return out


def is_prompt_sentence(sentence: str, prompts: Sequence[str] = ()) -> bool:
    """True if ``sentence`` is one of ``prompts`` (the 483 real ones) or a list join of them that
    :func:`fact_sentences` writes: it parses in full and writing its facts back gives the same sentence."""
    if sentence in set(prompts):
        return True
    facts = parse_prompt(sentence)
    if facts["unparsed"] or facts["conflicts"]:
        return False
    stated = {k: v for k, v in facts.items() if k in FACT_KEYS and v is not None}
    return sentence in fact_sentences(stated)


def compose_caption(sentences: Sequence[str], rng: np.random.Generator, max_facts: int = 1) -> str:
    """1..``max_facts`` of ``sentences`` (distinct, random order) joined by a space: one training caption.

    ``max_facts = 1``: one sentence (the paper's recipe: one fact per step). See :func:`msdm.data.compose.compose_caption`.
    """
    return _compose(sentences, rng, max_facts)
