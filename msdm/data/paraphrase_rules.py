"""An offline, deterministic paraphraser for the MEDVQA-GI prompt grammar.

The 483 prompts of the ImageCLEFmed MEDVQA-GI 2024 development set come from ten templates ("Generate an image
containing X.", "... with N polyps.", "... with an abnormality with the colors A, B and C.", "... located in the L1
and L2.", "Generate a polyp of type paris is.", ...). Each template is parsed into its slots and re-rendered with
other verbs, nouns and sentence frames; the slots (numbers, instruments, findings, colours, locations, negation) are
carried over verbatim or by an equivalent the fact checker (:mod:`msdm.data.facts`) folds back ("1" → "a single",
"5-10mm" → "between 5 and 10 mm", "lower-rigth" → "lower-right"). Prompts outside the grammar get only a verb swap,
which cannot change a fact.

Paper context (Prompt to Polyp §4.3): the authors paraphrased the 483 prompts into over 11 000 with a language model;
this rule-based generator gives the same kind of diversity without a language model (``msdm paraphrase`` with no
``--model``), and every output is fact-checked like an LLM's.
"""

from __future__ import annotations

import itertools
import re

from msdm.data import rng
from msdm.data.facts import NUMBER_WORDS

VERBS = ("Generate", "Create", "Produce", "Make", "Render", "Synthesize")
NOUNS = ("an image", "a picture", "an endoscopic image", "a medical image")
_NUM_WORD = {v: k for k, v in reversed(list(NUMBER_WORDS.items()))}  # 1 → "one" (not "single")


def _clean_item(x: str) -> str:
    """Slot text of "containing X": split the data's concatenations ("forcepsandmetal clip")."""
    x = re.sub(r"\b(forceps|clip|snare|polyp)and(?=[a-z])", r"\1 and ", x)
    return re.sub(r"\s+", " ", x).strip()


def _strip_article(x: str) -> str:
    return re.sub(r"^(?:a|an|the)\s+", "", x)


def _fix_locations(x: str) -> str:
    return re.sub(r"\brigth\b", "right", x)


def _size_words(s: str) -> str:
    """"< 5mm" → "smaller than 5 mm"; ">20mm" → "larger than 20 mm"; "5-10mm" → "between 5 and 10 mm"."""

    def one(tok: str) -> str:
        tok = tok.strip()
        if m := re.fullmatch(r"<\s*(\d+)\s*mm", tok):
            return f"smaller than {m[1]} mm"
        if m := re.fullmatch(r">\s*(\d+)\s*mm", tok):
            return f"larger than {m[1]} mm"
        if m := re.fullmatch(r"(\d+)\s*-\s*(\d+)\s*mm", tok):
            return f"between {m[1]} and {m[2]} mm"
        return tok

    parts = re.split(r",\s*|\s+and\s+", s)
    words = [one(p) for p in parts if p.strip()]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _plural(noun: str, n: int) -> str:
    base = noun[:-1] if noun.endswith("s") else noun
    return base if n == 1 else base + "s"


# --- the grammar ---------------------------------------------------------------------------------------------------
# Each rule: (name, regex over the original prompt, function(match) -> list of frames). A frame is a format string
# with {V} (verb) and {N} (noun phrase) left to fill.

def _contains(m):
    x = _clean_item(m["x"])
    return [f"{{V}} {{N}} containing {x}.", f"{{V}} {{N}} that contains {x}.", f"{{V}} {{N}} showing {x}.",
            f"{{V}} {{N}} that shows {x}.", f"{{V}} {{N}} in which {x} can be seen.", f"{{V}} {{N}} depicting {x}."]


def _not_contains(m):
    x = _clean_item(m["x"])
    bare = _strip_article(x)
    return [f"{{V}} {{N}} without {x}.", f"{{V}} {{N}} that does not contain {x}.", f"{{V}} {{N}} with no {bare}.",
            f"{{V}} {{N}} free of {bare}.", f"{{V}} {{N}} that does not show {x}.", f"{{V}} {{N}} showing no {bare}."]


def _procedure(m):
    p = m["p"]
    art = "an" if p[0] in "aeiou" else "a"
    return [f"{{V}} {{N}} from {art} {p} procedure.", f"{{V}} {{N}} taken during {art} {p}.",
            f"{{V}} {{N}} captured during {art} {p} procedure.", f"{{V}} {{N}} acquired in {art} {p} examination.",
            f"{{V}} {{N}} recorded during {art} {p}."]


def _none(m):
    noun = m["noun"]
    return [f"{{V}} {{N}} with no {noun}.", f"{{V}} {{N}} without any {noun}.", f"{{V}} {{N}} showing no {noun}.",
            f"{{V}} {{N}} that contains no {noun}.", f"{{V}} {{N}} free of {noun}.",
            f"{{V}} {{N}} in which there are no {noun}."]


def _count(m):
    n, noun = int(m["n"]), m["noun"]
    word = _NUM_WORD.get(n, str(n))
    nn = _plural(noun, n)
    frames = [f"{{V}} {{N}} with {n} {nn}.", f"{{V}} {{N}} showing {n} {nn}.", f"{{V}} {{N}} with exactly {n} {nn}.",
              f"{{V}} {{N}} that contains {word} {nn}.", f"{{V}} {{N}} in which {word} {nn} {'is' if n == 1 else 'are'} visible."]
    if n == 1:
        frames += [f"{{V}} {{N}} showing a single {nn}.", f"{{V}} {{N}} with a single {nn}."]
    else:
        frames += [f"{{V}} {{N}} depicting {word} {nn}."]
    return frames


def _adj_findings(m):
    adj = m["adj"].lower()
    return [f"{{V}} {{N}} with {adj} findings.", f"{{V}} {{N}} showing {adj} findings.",
            f"{{V}} {{N}} that contains {adj} findings.", f"{{V}} {{N}} depicting {adj} findings."]


def _size(m):
    plural = m["pl"] == "polyps"
    s = m["s"].strip()
    w = _size_words(s)
    if plural:
        return [f"{{V}} {{N}} with polyps of size {s}.", f"{{V}} {{N}} showing polyps of size {s}.",
                f"{{V}} {{N}} with polyps measuring {w}.", f"{{V}} {{N}} showing polyps sized {w}.",
                f"{{V}} {{N}} containing polyps that measure {w}."]
    return [f"{{V}} {{N}} with a polyp of size {s}.", f"{{V}} {{N}} showing a polyp of size {s}.",
            f"{{V}} {{N}} with a polyp measuring {w}.", f"{{V}} {{N}} showing a polyp sized {w}.",
            f"{{V}} {{N}} containing a polyp that measures {w}."]


def _paris(m):
    t = m["t"].strip()
    if m["pl"] == "polyps":
        return [f"{{V}} {{N}} of polyps of type {t}.", f"{{V}} {{N}} showing polyps classified as {t}.",
                f"{{V}} {{N}} containing polyps of the types {t}.", f"{{V}} {{N}} depicting polyps of type {t}."]
    return [f"{{V}} {{N}} of a polyp of type {t}.", f"{{V}} {{N}} showing a polyp classified as {t}.",
            f"{{V}} {{N}} containing a {t} polyp.", f"{{V}} {{N}} depicting a polyp of type {t}.",
            f"{{V}} {{N}} with a polyp of the {t} type."]


def _colours(m):
    c = m["c"].strip()
    return [f"{{V}} {{N}} with an abnormality in the colors {c}.", f"{{V}} {{N}} showing an abnormality colored {c}.",
            f"{{V}} {{N}} of an abnormality with the colors {c}.", f"{{V}} {{N}} containing an abnormality in {c}.",
            f"{{V}} {{N}} depicting an abnormality that appears {c}.",
            f"{{V}} {{N}} with an abnormality whose colors are {c}."]


def _located(m):
    what = m["what"]
    art = "an" if what[0] in "aeiou" else "a"
    where = _fix_locations(m["l"].strip())
    return [f"{{V}} {{N}} with {art} {what} located in the {where}.", f"{{V}} {{N}} showing {art} {what} in the {where}.",
            f"{{V}} {{N}} where {art} {what} appears in the {where}.",
            f"{{V}} {{N}} containing {art} {what} positioned in the {where}.",
            f"{{V}} {{N}} with {art} {what} found in the {where}.",
            f"{{V}} {{N}} in which {art} {what} is located in the {where}."]


RULES = [
    ("not_containing", r"Generate an image not containing (?P<x>.+)\.", _not_contains),
    ("containing", r"Generate an image containing (?P<x>.+)\.", _contains),
    ("procedure", r"Generate an image from an? (?P<p>\w+) procedure\.", _procedure),
    ("none", r"Generate an image with no (?P<noun>\w+)\.", _none),
    ("count", r"Generate an image with (?P<n>\d+) (?P<noun>\w+)\.", _count),
    ("size", r"Generate an image with (?:a )?(?P<pl>polyps?) of size (?P<s>.+)\.", _size),
    ("paris", r"Generate (?:a |an )?(?P<pl>polyps?) of type (?P<t>paris .+)\.", _paris),
    ("colours", r"Generate an image with an abnormality with the colou?rs? (?P<c>.+)\.", _colours),
    ("located", r"Generate an image with an(?: an)? (?P<what>abnormality|anatomical landmark|instrument) located in the (?P<l>.+)\.",
     _located),
    ("adjective_findings", r"Generate an image with (?P<adj>[A-Za-z]+) findings\.", _adj_findings),
]
_COMPILED = [(name, re.compile(rx, re.IGNORECASE), fn) for name, rx, fn in RULES]


def parse(prompt: str) -> tuple[str, list[str]]:
    """``(rule name, sentence frames)`` for ``prompt``; ``("fallback", frames)`` when no rule matches."""
    p = re.sub(r"\s+", " ", prompt.strip())
    for name, rx, fn in _COMPILED:
        if m := rx.fullmatch(p):
            return name, fn(m)
    # outside the grammar: only swap the leading verb, which carries no fact
    m = re.match(r"(?i)generate\s+(.*)", p)
    if not m:
        return "unsupported", []
    return "fallback", ["{V} " + m[1].replace("{", "{{").replace("}", "}}")]


class RuleParaphraser:
    """Deterministic paraphrases for MEDVQA-GI prompts: ``RuleParaphraser(seed).paraphrase(prompt, n)``.

    The candidate set of a prompt is (verbs × nouns × frames) minus the prompt itself; ``n`` of them are picked by a
    seeded, prompt-specific shuffle, so the same (prompt, n, seed) always gives the same list and a larger ``n``
    extends a smaller one.
    """

    name = "rules"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def candidates(self, prompt: str) -> list[str]:
        rule, frames = parse(prompt)
        out, seen = [], {prompt.strip()}
        nouns = NOUNS if rule != "fallback" else ("",)
        for frame, verb, noun in itertools.product(frames, VERBS, nouns):
            s = frame.format(V=verb, N=noun) if rule != "fallback" else frame.format(V=verb)
            s = re.sub(r"\s+", " ", s).strip()
            if s not in seen:
                seen.add(s)
                out.append(s)
        return out

    def paraphrase(self, prompt: str, n: int = 5) -> list[str]:
        cands = self.candidates(prompt)
        key = rng.salt(prompt)
        order = sorted(range(len(cands)), key=lambda i: rng.mix(self.seed, key, i))
        return [cands[i] for i in order[: max(0, int(n))]]

    def generate(self, prompts: list[str], n: int = 5) -> list[list[str]]:
        return [self.paraphrase(p, n) for p in prompts]

    def rule_of(self, prompt: str) -> str:
        return parse(prompt)[0]
