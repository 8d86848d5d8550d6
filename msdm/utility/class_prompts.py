"""Which prompts make images of which class: the bridge between a labelled classification task and a generator.

A class (or, for multi-label targets, a *label set*) has one or more prompts; several prompts per class are allowed
and encouraged (paraphrases give the generator's images more variety, Prompt to Polyp §3.2). Written as JSON::

    {"polyp": ["Generate an image containing a polyp.", "Generate an image with 1 polyp."],
     "no polyp": ["Generate an image with no polyps."]}

For multi-label targets a key names its label set with ``+`` (``"polyp+instrument"``; ``"none"`` is the empty set),
or says it explicitly: ``{"group name": {"labels": ["polyp", "instrument"], "prompts": [...]}}``.

The flat prompt list (:meth:`ClassPrompts.prompts`, group order then prompt order) is what the generator receives,
so image ``promptNNNN_imgMMMM.png`` of a generated folder belongs to the group of prompt ``NNNN``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

#: The key of the empty label set in multi-label prompt files.
NO_LABELS = "none"
#: Separator of label names in multi-label keys and label cells ("polyp+instrument").
LABEL_SEP = "+"


def parse_label_set(text: str) -> tuple[str, ...]:
    """``"polyp+instrument"`` → ``("instrument", "polyp")`` (sorted); ``"none"`` or ``""`` → ``()``."""
    text = str(text).strip()
    if text in ("", NO_LABELS):
        return ()
    parts = [p.strip() for p in text.split(LABEL_SEP)]
    if any(not p for p in parts):
        raise ValueError(f"label set {text!r} has an empty label name (write labels as a{LABEL_SEP}b, or {NO_LABELS!r})")
    return tuple(sorted(set(parts)))


@dataclass(frozen=True)
class PromptGroup:
    name: str  # the class name (multi-class) or the group's name (multi-label)
    labels: tuple[str, ...]  # multi-class: (name,); multi-label: the label set its images show
    prompts: tuple[str, ...]  # one or more prompts (paraphrases) for this class


@dataclass(frozen=True)
class ClassPrompts:
    """Prompt groups in file order. ``multilabel`` decides how keys are read (class names or label sets)."""

    groups: tuple[PromptGroup, ...]
    multilabel: bool = False

    def prompts(self) -> list[str]:
        """The flat list handed to a generator: group order, then prompt order within a group."""
        return [p for g in self.groups for p in g.prompts]

    def group_of_prompt(self) -> list[PromptGroup]:
        """``[group of prompt 0, group of prompt 1, ...]`` aligned with :meth:`prompts`."""
        return [g for g in self.groups for _ in g.prompts]

    def group_by_text(self) -> dict[str, PromptGroup]:
        """Prompt text → its group (the same text may not belong to two groups: checked at construction)."""
        return {p: g for g in self.groups for p in g.prompts}

    def label_names(self) -> list[str]:
        """Every label a group names (multi-label) or every class (multi-class), sorted."""
        return sorted({lab for g in self.groups for lab in g.labels})

    def to_json(self) -> dict:
        if not self.multilabel:
            return {g.name: list(g.prompts) for g in self.groups}
        return {g.name: {"labels": list(g.labels), "prompts": list(g.prompts)} for g in self.groups}

    def __post_init__(self):
        if not self.groups:
            raise ValueError("no prompts: give at least one class with a prompt (--prompts FILE or --prompt CLASS=TEXT)")
        seen: dict[str, str] = {}
        for g in self.groups:
            if not g.prompts or any(not p.strip() for p in g.prompts):
                raise ValueError(f"class {g.name!r} has no prompt or an empty prompt")
            for p in g.prompts:
                if p in seen and seen[p] != g.name:
                    raise ValueError(f"the prompt {p!r} is given for both {seen[p]!r} and {g.name!r}: a prompt must "
                                     f"name one class, or its images cannot be labelled")
                seen[p] = g.name
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError(f"class names repeat in the prompt file: {names}")


def _group(name: str, value, multilabel: bool) -> PromptGroup:
    labels = None
    if isinstance(value, dict):
        prompts = value.get("prompts")
        labels = value.get("labels")
        if prompts is None:
            raise ValueError(f"class {name!r}: an object entry needs a 'prompts' list (and, multi-label, 'labels')")
    else:
        prompts = value
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list):
        raise ValueError(f"class {name!r}: prompts must be a string or a list of strings, got {type(prompts).__name__}")
    prompts = tuple(str(p).strip() for p in prompts)
    if multilabel:
        labels = parse_label_set(name) if labels is None else tuple(sorted(set(map(str, labels))))
    else:
        if labels is not None and list(labels) != [name]:
            raise ValueError(f"class {name!r}: 'labels' is only for multi-label targets (--multilabel)")
        labels = (name,)
    return PromptGroup(str(name), labels, prompts)


def class_prompts_from_dict(obj: dict, multilabel: bool = False) -> ClassPrompts:
    if not isinstance(obj, dict):
        raise ValueError('a prompt file is a JSON object {"class": ["prompt", ...], ...}')
    return ClassPrompts(tuple(_group(k, v, multilabel) for k, v in obj.items()), multilabel)


def read_class_prompts(path: str | os.PathLike | None = None, pairs: list[str] | None = None,
                       multilabel: bool = False) -> ClassPrompts:
    """Prompts from a JSON file and/or ``CLASS=PROMPT`` pairs (repeat a class for several prompts)."""
    obj: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"prompt file {p} does not exist")
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not JSON ({e}); write {{\"class\": [\"prompt\", ...]}}") from e
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise ValueError(f"--prompt {pair!r}: write CLASS=PROMPT, e.g. --prompt 'polyp=Generate an image containing a polyp.'")
        cur = obj.setdefault(name.strip(), [])
        if isinstance(cur, dict):
            cur.setdefault("prompts", []).append(text.strip())
        else:
            obj[name.strip()] = ([cur] if isinstance(cur, str) else list(cur)) + [text.strip()]
    return class_prompts_from_dict(obj, multilabel)
