"""Paraphrase files, fact-checked generation, and the strategies that mix paraphrases into training prompts.

File formats (both read and written):

* the reference CSV (Prompt to Polyp reference ``src/dataset.py`` reads a ``Paraphrase`` column next to
  ``Prompt`` and ``Filename``): columns ``Filename,Prompt,Paraphrase``, **one paraphrase per row**; ``Filename`` may be
  empty; ``,`` or ``;`` separated;
* a JSON map ``{prompt: [paraphrase, ...]}``.

Strategies (``paraphrase_strategy=`` of the DataModules; Prompt to Polyp §4.3). Each epoch every training image
shows one caption, drawn with a seeded, epoch-dependent draw:

=================  ==================================================================================================
``none``           an original prompt of the image (uniform over its prompts). Validation/test always do this.
``add``            uniform over the image's **pool**: its original prompts *plus* all their paraphrases. With ``n``
                   paraphrases per prompt, a fraction ``1 / (1 + n)`` of draws are originals. **Best in the paper**:
                   adding paraphrases to the originals gave the lowest FID (paraphrasing lowered test FID by 10–20
                   points), the setting the reference calls ``ADD_PARAPHRASES_TO_TEXTS``.
``substitute(p)``  an original prompt, replaced with probability ``p`` (default 0.5) by one of its paraphrases
                   (the reference's ``p_paraphrase``). Worse than ``add`` in the paper.
``replace``        always a paraphrase (originals only for prompts without one): the model never sees the exact
                   challenge wording. Worst of the three in the paper.
=================  ==================================================================================================
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msdm.data import rng
from msdm.data.facts import fact_violations

STRATEGIES = ("none", "add", "substitute", "replace")

# ----------------------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParaphraseStrategy:
    """How a training caption is drawn from an image's original prompts and their paraphrases (module docstring)."""

    name: str = "none"
    p: float = 0.5  # only for "substitute"

    def __post_init__(self):
        if self.name not in STRATEGIES:
            raise ValueError(f"paraphrase strategy must be one of {STRATEGIES} (e.g. 'substitute(0.3)'), got {self.name!r}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"substitute probability must be in [0, 1], got {self.p}")

    @classmethod
    def parse(cls, spec: str | ParaphraseStrategy | None) -> ParaphraseStrategy:
        """``"none" | "add" | "replace" | "substitute" | "substitute(0.3)" | "substitute:0.3"``."""
        if isinstance(spec, ParaphraseStrategy):
            return spec
        if spec is None:
            return cls("none")
        s = str(spec).strip().lower()
        m = re.fullmatch(r"(substitute|sub)\s*(?:[(:=]\s*([0-9.]+)\s*\)?)?", s)
        if m:
            return cls("substitute", float(m[2]) if m[2] else 0.5)
        return cls(s)

    def __str__(self) -> str:
        return f"substitute({self.p:g})" if self.name == "substitute" else self.name

    def expected_original_fraction(self, n_paraphrases: int) -> float:
        """Share of training draws that show an original prompt when every prompt has ``n_paraphrases``."""
        if self.name == "none" or n_paraphrases == 0:
            return 1.0
        if self.name == "add":
            return 1.0 / (1.0 + n_paraphrases)
        if self.name == "substitute":
            return 1.0 - self.p
        return 0.0

    def draw(
        self,
        originals: Sequence[str],
        paraphrases: Mapping[str, Sequence[str]],
        seed: int,
        epoch: int,
        index: int,
    ) -> tuple[str, str]:
        """``(caption, original)`` for one image in one epoch (a pure function of its arguments)."""
        if not originals:
            raise ValueError("an image needs at least one prompt")
        if self.name == "add":
            pool_size = sum(1 + len(paraphrases.get(o, ())) for o in originals)
            k = rng.randint(pool_size, seed, epoch, index, _SALT_PROMPT)
            for o in originals:
                if k == 0:
                    return o, o
                alts = paraphrases.get(o, ())
                if k <= len(alts):
                    return alts[k - 1], o
                k -= 1 + len(alts)
            raise AssertionError("unreachable")  # pragma: no cover
        o = originals[rng.randint(len(originals), seed, epoch, index, _SALT_PROMPT)]
        alts = paraphrases.get(o, ())
        if self.name == "none" or not alts:
            return o, o
        if self.name == "substitute" and rng.uniform(seed, epoch, index, _SALT_SUBST) >= self.p:
            return o, o
        return alts[rng.randint(len(alts), seed, epoch, index, _SALT_PARA)], o


_SALT_PROMPT, _SALT_SUBST, _SALT_PARA = rng.salt("prompt"), rng.salt("substitute"), rng.salt("paraphrase")


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def _dedupe(items: Iterable[str]) -> list[str]:
    seen, out = set(), []
    for x in items:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def read_paraphrases(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a paraphrase file (reference CSV or JSON map, see module docstring) into ``{prompt: [paraphrase, ...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"paraphrase file {path} not found (write one with `msdm paraphrase`)")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{prompt: [paraphrase, ...]}}, got {type(data).__name__}")
        out = {}
        for k, v in data.items():
            vals = [v] if isinstance(v, str) else list(v or [])
            vals = _dedupe(s.strip() for s in vals if isinstance(s, str) and s.strip() and s.strip() != k.strip())
            if vals:
                out[k.strip()] = vals
        return out
    text = path.read_text(encoding="utf-8-sig")
    delim = ";" if text.splitlines()[0].count(";") > text.splitlines()[0].count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delim)
    cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    if "prompt" not in cols or "paraphrase" not in cols:
        raise ValueError(
            f"{path}: a paraphrase CSV needs the columns Prompt and Paraphrase (reference format "
            f"'Filename,Prompt,Paraphrase'); found {reader.fieldnames}"
        )
    out: dict[str, list[str]] = {}
    for row in reader:
        p, q = (row.get(cols["prompt"]) or "").strip(), (row.get(cols["paraphrase"]) or "").strip()
        if p and q and q != p:
            out.setdefault(p, []).append(q)
    return {k: _dedupe(v) for k, v in out.items()}


def write_paraphrases_json(path: str | os.PathLike, mapping: Mapping[str, Sequence[str]]) -> None:
    from msdm.io import write_json

    write_json(path, {k: list(v) for k, v in mapping.items()})


def write_paraphrases_csv(
    path: str | os.PathLike,
    mapping: Mapping[str, Sequence[str]],
    filenames: Mapping[str, Sequence[str]] | None = None,
) -> int:
    """Write the reference CSV ``Filename,Prompt,Paraphrase``; returns the number of rows.

    With ``filenames`` (prompt → image files, e.g. from a ``prompt-gt.csv``) each (file, prompt) pair gets one row
    per paraphrase; otherwise ``Filename`` is empty.
    """
    from msdm.io import atomic_file

    rows = 0
    with atomic_file(path, "w") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["Filename", "Prompt", "Paraphrase"])
        for prompt, paras in mapping.items():
            for fn in (filenames or {}).get(prompt) or [""]:
                for q in paras:
                    w.writerow([fn, prompt, q])
                    rows += 1
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Fact-checked generation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ParaphraseReport:
    """Counts of one generation run: kept paraphrases, dropped fact violators (with examples), and the rest."""

    prompts: int = 0
    kept: int = 0
    dropped: int = 0  # fact violations
    duplicates: int = 0  # identical to the prompt or to an earlier paraphrase
    empty: int = 0
    prompts_without_paraphrase: list[str] = field(default_factory=list)
    dropped_examples: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def summary(self) -> str:
        s = (f"{self.prompts} prompts: kept {self.kept} paraphrases, dropped {self.dropped} that changed a fact, "
             f"{self.duplicates} duplicates, {self.empty} empty; {len(self.prompts_without_paraphrase)} prompts "
             f"without a kept paraphrase")
        for p, q, v in self.dropped_examples[:5]:
            s += f"\n  dropped: {q!r} (for {p!r}): {'; '.join(v)}"
        return s


def generate_paraphrases(
    prompts: Sequence[str],
    paraphraser,
    n: int = 5,
    check: Callable[[str, str], list[str]] = fact_violations,
    max_examples: int = 20,
) -> tuple[dict[str, list[str]], ParaphraseReport]:
    """Paraphrase ``prompts`` with ``paraphraser.generate(prompts, n)`` and keep, per prompt, up to ``n`` distinct
    paraphrases that keep its facts. Returns ``({prompt: [paraphrase, ...]}, report)``."""
    prompts = _dedupe(p.strip() for p in prompts if p and p.strip())
    report = ParaphraseReport(prompts=len(prompts))
    candidates = paraphraser.generate(list(prompts), n)
    out: dict[str, list[str]] = {}
    for prompt, cands in zip(prompts, candidates):
        kept: list[str] = []
        seen = {prompt}
        for q in cands:
            q = re.sub(r"\s+", " ", (q or "")).strip()
            if not q:
                report.empty += 1
                continue
            if q in seen:
                report.duplicates += 1
                continue
            seen.add(q)
            violations = check(prompt, q)
            if violations:
                report.dropped += 1
                if len(report.dropped_examples) < max_examples:
                    report.dropped_examples.append((prompt, q, violations))
                continue
            if len(kept) < n:
                kept.append(q)
        report.kept += len(kept)
        if kept:
            out[prompt] = kept
        else:
            report.prompts_without_paraphrase.append(prompt)
    return out, report


def resolve_paraphrases(spec: str | None, prompts: Sequence[str], seed: int = 0) -> tuple[dict[str, list[str]], str]:
    """Paraphrases for a DataModule's ``paraphrases=`` argument: a file path (reference CSV or JSON map), or
    ``"rules"`` / ``"rules:N"`` to generate ``N`` (default 10) fact-checked rule-based paraphrases per prompt on the
    fly (offline, deterministic; see :mod:`msdm.data.paraphrase_rules`). Returns ``(mapping, description)``."""
    if not spec:
        return {}, "none"
    m = re.fullmatch(r"rules(?::(\d+))?", str(spec).strip())
    if m:
        from msdm.data.paraphrase_rules import RuleParaphraser

        n = int(m[1]) if m[1] else 10
        mapping, report = generate_paraphrases(prompts, RuleParaphraser(seed), n)
        return mapping, f"rule-based, {n} per prompt ({report.kept} kept, {report.dropped} dropped)"
    return read_paraphrases(spec), str(spec)
