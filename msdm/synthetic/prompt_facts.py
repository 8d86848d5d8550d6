"""What a prompt asks for, in the synthetic scenes' vocabulary: :func:`parse_prompt`.

The grammar is the one of the MEDVQA-GI 2024 prompts as :func:`msdm.synthetic.captions.captions_for` writes them
("Generate an image with 2 polyps.", "Generate an image containing polyp snareandtube.", "Generate an image with
an an abnormality located in the center and upper-left.", typos included), plus composition: several sentences in
one prompt, and several clauses in one sentence joined by ", " / " and " / ", and " ("Generate an image containing
text, with 1 polyp and not containing a green/black box artefact."). A keyword (``containing``, ``not containing``,
``with``, ``from``) opens a clause; a clause without one continues the previous keyword ("with 1 polyp and no
instruments", "not containing text and a green/black box artefact": the negation covers both).

A sentence either matches known patterns in full (its lists too: sizes, locations, colours, Paris types, instrument
kinds) or gives no fact at all and is reported, whole, in ``unparsed``: a list that stops at an
unknown word ("the colors pink, red and brown") would otherwise read as a shorter list. Nothing is guessed. Two clauses that
disagree on one fact ("with 1 polyp. with no polyps.") leave the fact unspecified and are listed in ``conflicts``.
"""

from __future__ import annotations

import re

from msdm.synthetic.scene import CAPTION_LOCATION_ORDER, PARIS_TYPES, POLYP_SIZES, PROCEDURES

__all__ = ["FACT_KEYS", "INSTRUMENT_KINDS", "COLORS", "parse_prompt", "empty_facts"]

#: Instrument kinds of the real prompts; the synthetic renderer draws the first three (no metal clip, no needle).
INSTRUMENT_KINDS: tuple[str, ...] = ("polyp snare", "biopsy forceps", "metal clip", "injection needle", "tube")
#: Abnormality colour words of the real prompts (the synthetic polyps are "pink" or "pink and red").
COLORS: tuple[str, ...] = ("pale pink", "pink/red", "pink", "red", "white", "yellow", "orange", "brown", "burgundy",
                           "violet", "purple", "blue", "grey", "green", "black")

#: Keys of :func:`parse_prompt`'s result (besides ``unparsed`` and ``conflicts``); ``None`` = the prompt does not say.
FACT_KEYS: tuple[str, ...] = (
    "procedure",  # "colonoscopy" | "gastroscopy"
    "text",  # bool: on-screen text
    "box",  # bool: the green/black box artefact
    "instrument",  # bool: any instrument
    "instrument_count",  # int
    "instrument_kinds",  # tuple of INSTRUMENT_KINDS (the set the prompt names, in vocabulary order)
    "instrument_locations",  # tuple of location cells (caption order)
    "polyp",  # bool: any polyp (the only "finding"/"abnormality" the scenes draw)
    "polyp_count",  # int
    "polyp_sizes",  # tuple of POLYP_SIZES (the distinct size classes present)
    "polyp_paris",  # tuple of PARIS_TYPES
    "polyp_colors",  # tuple of COLORS
    "polyp_locations",  # tuple of location cells (caption order)
)


def empty_facts() -> dict:
    """A result with every fact unspecified."""
    return {**{k: None for k in FACT_KEYS}, "unparsed": [], "conflicts": []}


# =====================================================================================================================
# Patterns
# =====================================================================================================================

_SEP = r"(?:, and |, | and )"  # between list items and between clauses


def _alt(words) -> str:
    """Regex alternation of literal words, longest first (so "pale pink" wins over "pink")."""
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def _list(words, sep: str = _SEP) -> str:
    item = _alt(words)
    return f"{item}(?:{sep}{item})*"


_END = rf"(?=$|{_SEP})"  # a clause ends at the end of the sentence or at a separator
_NUM = r"(?P<n>no|\d+)"
_SIZE, _LOC, _PARIS, _COLOR = _list(POLYP_SIZES), _list(CAPTION_LOCATION_ORDER), _list(
    [f"paris {t}" for t in PARIS_TYPES]), _list(COLORS)
# "polyp snareandtube" (the real prompts concatenate kinds with a bare "and"); spaced joins are accepted too
_KINDS = _list(INSTRUMENT_KINDS, sep=r"(?:, and |, | and |and)")

# (clause keyword, item regex, handler name); items are tried in order, each must end at _END
_ITEMS: dict[str, list[tuple[str, str]]] = {
    "containing": [
        (r"text", "text"),
        (r"a green/black box artefact", "box"),
        (r"(?:a polyp|polyps)", "polyp"),
        (rf"(?P<kinds>{_KINDS})", "kinds"),
    ],
    "with": [
        (rf"{_NUM} (?P<what>polyps?|findings?|instruments?)", "count"),
        (rf"(?:a polyp|polyps) of size (?P<sizes>{_SIZE})", "sizes"),
        (rf"(?:an )?abnormality with the colou?rs? (?P<colors>{_COLOR})", "colors"),
        (rf"(?:an )?(?:an )?abnormality located in the (?P<locs>{_LOC})", "polyp_locations"),
        (rf"(?:an )?(?:an )?instrument located in the (?P<locs>{_LOC})", "instrument_locations"),
        (rf"(?:a polyp|polyps) of type (?P<paris>{_PARIS})", "paris"),
    ],
    "from": [(rf"an? (?P<proc>{_alt(PROCEDURES)}) procedure", "procedure")],
    # "Generate a polyp of type paris ip." / "Generate polyps of type paris ip and paris is."
    "generate": [(rf"(?:a polyp|polyps) of type (?P<paris>{_PARIS})", "paris")],
}
# "not containing tube" says nothing definite about the other kinds or about instruments at all: not a pattern
# (reported as unparsed), as no true caption says it.
_ITEMS["not containing"] = [item for item in _ITEMS["containing"] if item[1] != "kinds"]
_COMPILED = {mode: [(re.compile(pattern + _END), handler) for pattern, handler in items] for mode, items in _ITEMS.items()}
_SEP_RE = re.compile(_SEP)
_KEYWORD = re.compile(r"(not containing|containing|with|from) ")
_PREFIX = re.compile(r"^(?:generate )?(?:(?:an|one) image |images )?")


def _split_items(text: str, vocabulary) -> tuple[str, ...]:
    """The vocabulary words found in a matched list, in vocabulary order (a set: duplicates collapse)."""
    found = set(re.findall(_alt(vocabulary), text))
    return tuple(w for w in vocabulary if w in found)


# =====================================================================================================================
# Parser
# =====================================================================================================================


def parse_prompt(prompt: str) -> dict:
    """The facts ``prompt`` asks for (see :data:`FACT_KEYS`; ``None`` = not specified), plus ``unparsed`` (the
    sentences that did not parse in full, verbatim; they give no fact) and ``conflicts`` (facts two clauses disagree on; left ``None``).

    Example: ``parse_prompt("Generate an image containing text, with 2 polyps.")`` gives ``text=True``,
    ``polyp=True``, ``polyp_count=2`` and every other fact ``None``.
    """
    facts = empty_facts()
    conflicted: set[str] = set()

    def put(key: str, value) -> None:
        if key in conflicted:
            return
        if facts[key] is not None and facts[key] != value:
            facts["conflicts"].append(f"{key}: {facts[key]!r} vs {value!r}")
            conflicted.add(key)
            facts[key] = None
            return
        facts[key] = value

    for sentence in _sentences(prompt):
        staged: list[tuple[str, object]] = []
        if not _parse_sentence(sentence, staged):
            facts["unparsed"].append(sentence)
            continue
        for key, value in staged:
            put(key, value)
    return facts


def _sentences(prompt: str) -> list[str]:
    # Sentences end with "."; no vocabulary word contains a period ("< 5mm", "pink/red", "green/black").
    return [s.strip() for s in re.split(r"\.(?:\s+|$)", prompt.strip()) if s.strip()]


def _parse_sentence(sentence: str, staged: list) -> bool:
    """Append the sentence's ``(fact, value)`` pairs to ``staged``; False when a clause does not parse (the caller
    then drops them all)."""
    put = lambda key, value: staged.append((key, value))  # noqa: E731
    low = " ".join(sentence.split()).lower()  # collapse whitespace
    pos = _PREFIX.match(low).end()
    mode = "generate"
    first = True
    while pos < len(low):
        if not first:
            sep = _SEP_RE.match(low, pos)
            if sep is None:
                return False
            pos = sep.end()
        first = False
        kw = _KEYWORD.match(low, pos)
        if kw is not None:
            mode, pos = kw.group(1), kw.end()
        for pattern, handler in _COMPILED[mode]:
            m = pattern.match(low, pos)
            if m is not None:
                _apply(handler, m, mode == "not containing", put)
                pos = m.end()
                break
        else:
            return False
    return True


# Handlers of a clause that names a list of items: (presence fact it implies, list fact, regex group, vocabulary).
_LIST_HANDLERS = {
    "kinds": ("instrument", "instrument_kinds", "kinds", INSTRUMENT_KINDS),
    "sizes": ("polyp", "polyp_sizes", "sizes", POLYP_SIZES),
    "colors": ("polyp", "polyp_colors", "colors", COLORS),
    "polyp_locations": ("polyp", "polyp_locations", "locs", CAPTION_LOCATION_ORDER),
    "instrument_locations": ("instrument", "instrument_locations", "locs", CAPTION_LOCATION_ORDER),
}


def _apply(handler: str, m: re.Match, negated: bool, put) -> None:
    g = m.groupdict()
    if handler == "text":
        put("text", not negated)
    elif handler == "box":
        put("box", not negated)
    elif handler == "polyp":
        put("polyp", not negated)
        if negated:
            put("polyp_count", 0)
    elif handler == "count":
        n = 0 if g["n"] == "no" else int(g["n"])
        what = g["what"].rstrip("s")
        key = "instrument" if what == "instrument" else "polyp"  # polyps are the only findings the scenes draw
        put(key, n > 0)
        put(f"{key}_count", n)
    elif handler in _LIST_HANDLERS:
        present, key, group, vocabulary = _LIST_HANDLERS[handler]
        put(present, True)
        put(key, _split_items(g[group], vocabulary))
    elif handler == "paris":
        put("polyp", True)
        put("polyp_paris", tuple(t for t in PARIS_TYPES if re.search(rf"paris {t}\b", g["paris"])))
    elif handler == "procedure":
        put("procedure", g["proc"])
    else:  # pragma: no cover - a pattern table entry without a handler is a programming error
        raise AssertionError(handler)
