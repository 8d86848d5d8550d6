"""Paraphrase fact checks: the facts of any MEDVQA-GI-style text, and a checker that a paraphrase keeps them.

Where :mod:`msdm.facts.grammar` reads the prompts' own grammar exactly (and nothing else), this module reads free
text (paraphrases by rules or an LLM) loosely, in the same vocabulary (:mod:`msdm.facts.vocabulary`). A paraphrase may change wording, never content. :func:`extract_facts` reduces a prompt to what an image must show:

* **numbers** (``1``, ``16``; number words and "single" count too) and **polyp sizes** with their comparator kept
  bound to the number (``< 5mm`` = "smaller than 5 mm" → ``<5``; ``5-10mm`` = "between 5 and 10 mm" → ``5-10``);
* **instruments** (biopsy forceps, metal clip, polyp snare, injection needle, tube, and the generic "instrument");
* **findings and landmarks** (polyp, oesophagitis, ulcerative colitis, Barrett's, z-line, cecum, ileum, pylorus,
  text, the green/black box artefact, "abnormality", "finding", "anatomical landmark"), Paris types, procedures;
* **colours** and **locations** (upper-left … lower-center, center), with spelling variants folded
  ("rigth" → right, "centre"/"middle" → center, "top"/"bottom" → upper/lower, "gray" → grey, "reddish" → red);
* **negation** ("no", "not", "without", "free of", "absence", ...).

:func:`fact_violations` lists what a paraphrase lost or added; an empty list means the paraphrase keeps the facts.
The rule-based paraphraser is tested to keep the facts of all 483 real MEDVQA-GI 2024 prompts; LLM paraphrases are
filtered by this checker and the dropped ones are counted (``msdm paraphrase`` prints the counts).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field

from msdm.facts.vocabulary import COLOURS, NEGATIONS, NUMBER_WORDS
from msdm.facts.vocabulary import LOCATION_WORDS as LOCATIONS  # noqa: F401  (the name this module always exported)

# --- spelling variants and entity patterns ---------------------------------------------------------------------------

# (pattern, canonical name) in priority order: longer, more specific phrases first, and each match is blanked out
# so that "polyp snare" is an instrument, not a polyp, and "green/black box" is an artefact, not two colours.
_COLOUR_VARIANTS = {"gray": "grey", "reddish": "red", "pinkish": "pink", "whitish": "white", "yellowish": "yellow",
                    "greyish": "grey", "grayish": "grey", "bluish": "blue", "blueish": "blue", "greenish": "green",
                    "brownish": "brown", "purplish": "purple", "orangish": "orange", "blackish": "black"}
_ARTEFACT = [(r"green\s*(?:/|-|or|and)\s*black\s+box(?:\s+artefact)?|black\s*(?:/|-|or|and)\s*green\s+box(?:\s+artefact)?",
              "box artefact")]
_INSTRUMENTS = [
    (r"(?:biopsy\s+)?forceps", "forceps"),
    (r"(?:metal(?:lic)?\s+)?clips?", "clip"),
    (r"(?:polyp(?:ectomy)?\s+)?snares?", "snare"),
    (r"(?:injection\s+)?needles?", "needle"),
    (r"tubes?|tubing", "tube"),
    (r"instruments?|tools?|devices?", "instrument"),
]
_PROCEDURES = [(r"colonoscop(?:y|ic|ies)", "colonoscopy"), (r"gastroscop(?:y|ic|ies)", "gastroscopy")]
_PARIS = r"paris\s+(?:type\s+|class(?:ification)?\s+|classification\s+type\s+)?(?:0-)?(iia|iib|iic|iii|ip|is|isp)\b"
_FINDINGS = [
    (r"ulcerative\s+colitis|colitis", "ulcerative colitis"),
    (r"o?esophagitis", "oesophagitis"),
    (r"barrett'?s?(?:\s+(?:o?esophagus))?", "barretts"),
    (r"z[\s-]?line", "z-line"),
    (r"ca?ecum", "cecum"),
    (r"ileum", "ileum"),
    (r"pylorus", "pylorus"),
    (r"polyps?", "polyp"),
    (r"texts?|textual|writing", "text"),
    (r"abnormalit(?:y|ies)|anomal(?:y|ies)|lesions?", "abnormality"),
    (r"anatomical\s+landmarks?|landmarks?", "landmark"),
    (r"findings?", "finding"),
]


@dataclass
class Facts:
    numbers: Counter = field(default_factory=Counter)
    sizes: frozenset = frozenset()
    comparators: frozenset = frozenset()
    instruments: frozenset = frozenset()
    findings: frozenset = frozenset()
    paris: frozenset = frozenset()
    procedures: frozenset = frozenset()
    colours: frozenset = frozenset()
    locations: frozenset = frozenset()
    negated: bool = False

    def as_dict(self) -> dict:
        return {
            "numbers": dict(self.numbers), "sizes": sorted(self.sizes), "comparators": sorted(self.comparators),
            "instruments": sorted(self.instruments), "findings": sorted(self.findings), "paris": sorted(self.paris),
            "procedures": sorted(self.procedures), "colours": sorted(self.colours),
            "locations": sorted(self.locations), "negated": self.negated,
        }


_RX_DASH = re.compile(r"[\u2010-\u2015\u2212]")
_RX_CONCAT = re.compile(r"\b(forceps|clip|snare|polyp)and(?=[a-z])")
_WORD_MAP = {"rigth": "right", "centre": "center", "middle": "center", "central": "center", "centered": "center",
             "centred": "center", "top": "upper", "bottom": "lower", **_COLOUR_VARIANTS}
_RX_WORDS = re.compile(r"\b(" + "|".join(sorted(_WORD_MAP, key=len, reverse=True)) + r")\b")
_RX_COLOR_WORD = re.compile(r"\bcolou?r(?:s|ed|ing)?\b")
_RX_ARTEFACT_WORD = re.compile(r"\barte?[fc]acts?\b|\bartifacts?\b")


def normalize_text(text: str) -> str:
    """Lower-case and fold the spelling variants of the prompt vocabulary (see the module docstring)."""
    t = _RX_DASH.sub("-", text.lower()).replace("\u2019", "'")
    t = _RX_CONCAT.sub(r"\1 and ", t)  # "forcepsandmetal" → "forceps and metal"
    t = _RX_WORDS.sub(lambda m: _WORD_MAP[m[1]], t)
    t = _RX_COLOR_WORD.sub("color", t)
    return _RX_ARTEFACT_WORD.sub("artefact", t)


def _compile(pairs):
    return [(re.compile(rf"\b(?:{pat})\b"), name) for pat, name in pairs]


_C_ARTEFACT = _compile(_ARTEFACT)[0][0]
# instruments, procedures and findings in one pass: at each position the first alternative that matches wins, and
# instruments come first, so "polyp snare" is a snare and "biopsy forceps" one instrument.
_ENTITIES = [("instruments", n, pat) for pat, n in _INSTRUMENTS] + [("procedures", n, pat) for pat, n in _PROCEDURES] \
    + [("findings", n, pat) for pat, n in _FINDINGS]
_C_ENTITIES = re.compile("|".join(rf"\b(?P<e{i}>{pat})\b" for i, (_, _, pat) in enumerate(_ENTITIES)))
_C_PARIS = re.compile(_PARIS)
_UNIT = r"\s*(?:mm|millimet(?:er|re)s?)\b"
_C_SIZES = [
    (re.compile(rf"(?:<|\b(?:smaller|less|under|below)(?:\s+than)?)\s*(\d+){_UNIT}"), "<{}"),
    (re.compile(rf"(?:>|\b(?:larger|greater|bigger|more|over|above|exceeding)(?:\s+than)?)\s*(\d+){_UNIT}"), ">{}"),
    (re.compile(rf"(?:\bbetween\s+|\bfrom\s+)?\b(\d+)\s*(?:-|to|and)\s*(\d+){_UNIT}"), "{}-{}"),
]
_C_LESS = re.compile(r"<|\b(?:smaller|less|fewer|under|below)\b")
_C_MORE = re.compile(r">|\b(?:larger|greater|bigger|more|over|above|exceeding)\b")
_C_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_C_NUMWORDS = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b")
_C_LOC_COMPOUND = re.compile(r"\b(upper|lower|center)[\s-]+(left|right|center)\b")
_C_LOC_REVERSED = re.compile(r"\b(left|right)[\s-]+(upper|lower)\b")
_C_LOC_SINGLE = re.compile(r"\b(center|upper|lower|left|right)\b")
_C_COLOURS = re.compile(rf"\b({'|'.join(COLOURS)})\b")
_C_NEGATION = re.compile("|".join(re.escape(n) if n == "n't" else rf"\b{re.escape(n)}\b" for n in NEGATIONS))


def _take(t: str, rx: re.Pattern) -> tuple[bool, str]:
    """Whether ``rx`` matches, and ``t`` with its matches blanked out (so they are not read twice)."""
    t2, n = rx.subn(" ; ", t)
    return n > 0, t2


@functools.lru_cache(maxsize=65536)
def extract_facts(text: str) -> Facts:
    """The facts of ``text`` (cached; treat the result as read-only)."""
    t = normalize_text(text)
    found, t = _take(t, _C_ARTEFACT)
    findings = {"box artefact"} if found else set()
    paris = set(_C_PARIS.findall(t))
    if paris:
        t = _C_PARIS.sub(" ; ", t)
    found_entities = {"instruments": set(), "procedures": set(), "findings": findings}
    for m in _C_ENTITIES.finditer(t):
        kind, name, _ = _ENTITIES[int(m.lastgroup[1:])]
        found_entities[kind].add(name)
    instruments, procedures = found_entities["instruments"], found_entities["procedures"]
    t = _C_ENTITIES.sub(" ; ", t)
    # sizes before bare numbers, so a comparator stays bound to its number: "< 5mm" / "smaller than 5 mm" → "<5",
    # "5-10mm" / "between 5 and 10 mm" → "5-10", ">20mm" / "larger than 20 millimetres" → ">20"
    sizes = set()
    if "mm" in t or "millimet" in t:
        for rx, fmt in _C_SIZES:
            for m in rx.findall(t):
                sizes.add(fmt.format(*(m if isinstance(m, tuple) else (m,))))
            t = rx.sub(" ; ", t)
    comparators = set()
    if _C_LESS.search(t):
        comparators.add("<")
    if _C_MORE.search(t):
        comparators.add(">")
    numbers = Counter(int(float(n)) for n in _C_DIGITS.findall(t))
    numbers.update(NUMBER_WORDS[w] for w in _C_NUMWORDS.findall(t))
    # locations: compounds first ("upper left", "lower-center", "left upper" → canonical), then single words
    locations = set()
    for a, b in _C_LOC_COMPOUND.findall(t):
        locations.add(f"{a}-{b}" if a != b else "center")
    t = _C_LOC_COMPOUND.sub(" ; ", t)
    for a, b in _C_LOC_REVERSED.findall(t):
        locations.add(f"{b}-{a}")
    t = _C_LOC_REVERSED.sub(" ; ", t)
    locations.update(_C_LOC_SINGLE.findall(t))
    return Facts(
        numbers=numbers, sizes=frozenset(sizes), comparators=frozenset(comparators),
        instruments=frozenset(instruments), findings=frozenset(findings), paris=frozenset(paris),
        procedures=frozenset(procedures), colours=frozenset(_C_COLOURS.findall(t)), locations=frozenset(locations),
        negated=bool(_C_NEGATION.search(t)),
    )


def fact_violations(original: str, paraphrase: str) -> list[str]:
    """What ``paraphrase`` lost or added relative to ``original`` (empty list: the facts are kept)."""
    a, b = extract_facts(original), extract_facts(paraphrase)
    out = []
    for key in ("numbers", "sizes", "comparators", "instruments", "findings", "paris", "procedures", "colours", "locations"):
        va, vb = getattr(a, key), getattr(b, key)
        if va != vb:
            if key == "numbers":
                lost, added = sorted((va - vb).elements()), sorted((vb - va).elements())
            else:
                lost, added = sorted(va - vb), sorted(vb - va)
            parts = ([f"lost {lost}"] if lost else []) + ([f"added {added}"] if added else [])
            out.append(f"{key}: {', '.join(parts)}")
    if a.negated != b.negated:
        out.append("negation: " + ("lost" if a.negated else "added"))
    if not paraphrase.strip():
        out.append("empty paraphrase")
    return out


def keeps_facts(original: str, paraphrase: str) -> bool:
    return not fact_violations(original, paraphrase)


# --- words the prompt-aware augmentation looks for -----------------------------------------------------------------

def mentions_horizontal_side(text: str) -> bool:
    """True if the prompt names a left/right position (a horizontal flip would contradict it)."""
    locs = extract_facts(text).locations
    return any("left" in loc or "right" in loc for loc in locs)


def mentions_vertical_side(text: str) -> bool:
    """True if the prompt names an upper/lower position (a vertical flip would contradict it)."""
    locs = extract_facts(text).locations
    return any("upper" in loc or "lower" in loc for loc in locs)


def mentions_location(text: str) -> bool:
    return bool(extract_facts(text).locations)


def mentions_colour(text: str) -> bool:
    return bool(extract_facts(text).colours)


def mentions_text_or_artefact(text: str) -> bool:
    """Text overlays and the green/black box artefact have a fixed look and place; flipping would mirror them."""
    return bool({"text", "box artefact"} & extract_facts(text).findings)
