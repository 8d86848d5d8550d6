"""Prompt files, read in one place: plain text, JSON lists, the MEDVQA-GI challenge JSON, CSV, and the numbered
``prompts.json`` of a generated folder (``{"1": prompt, ...}``, written by :func:`numbered_prompts`)."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from msdm.errors import InputError, PathNotFoundError


def flatten_challenge_prompts(obj: dict) -> list[str]:
    """``{qa_key: {pair_key: [prompt_A, prompt_B]}}`` → ``[A1, B1, A2, B2, ...]`` in file order (the challenge
    script's flattening; prompt index ``i`` is 1-based in file names). Also ``{qa_key: [prompts]}`` and
    ``{"1": prompt, ...}`` (a generated folder's ``prompts.json``). Anything that is not a prompt — a number, a
    ``null``, deeper nesting — is refused (:class:`~msdm.errors.InputError`), never turned into a prompt."""
    out: list[str] = []
    for key, group in obj.items():
        if isinstance(group, dict):
            for pair_key, pair in group.items():
                out.extend(_strings(pair if isinstance(pair, list) else [pair], f"{key}.{pair_key}"))
        elif isinstance(group, list):
            out.extend(_strings(group, str(key)))
        else:
            out.extend(_strings([group], str(key)))
    return out


def _strings(values: list, where: str) -> list[str]:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            at = where if len(values) == 1 else f"{where}[{i}]"
            raise InputError(f"JSON value at {at!r} is {json.dumps(v)}, not a prompt: a prompt file holds strings "
                             '(a list, {"1": "prompt", ...} or the challenge\'s {qa: {pair: [A, B]}})')
    return list(values)


@dataclass
class PromptFile:
    """A prompt file as read: the prompts (numbered 1.. in this order) and the lines that are not prompts."""

    path: Path
    prompts: list[str]
    skipped_lines: list[int] = field(default_factory=list)  # 1-based line numbers of blank / ``#`` lines (.txt)

    def numbering_note(self) -> str:
        """One line saying how prompts are numbered when that differs from line numbers ("" otherwise)."""
        if not self.skipped_lines:
            return ""
        shown = ", ".join(map(str, self.skipped_lines[:6])) + (" ..." if len(self.skipped_lines) > 6 else "")
        return (f"{self.path.name}: {len(self.skipped_lines)} blank or # line(s) skipped (line {shown}): prompts are "
                "numbered 1.. in order of the remaining lines, not by line number (prompts.json in the output "
                "lists each number's prompt)")


def read_prompt_file(path: str | os.PathLike) -> PromptFile:
    """Read a prompt file (see :func:`read_prompts`) and say which lines were not prompts."""
    p = Path(path)
    if p.is_dir():
        hint = f" (a generated folder's prompts are in {p / 'prompts.json'})" if (p / "prompts.json").is_file() else ""
        raise InputError(f"prompt file {p} is a folder: give a .txt (one prompt per line), .json or .csv file{hint}")
    if not p.is_file():
        raise PathNotFoundError(f"prompt file {p} does not exist ({p.absolute()})", p)
    try:
        return _read_prompts(p)
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not UTF-8 text (byte {e.start}: {e.reason}); re-save it as UTF-8") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from e
    except InputError as e:
        raise InputError(f"{p}: {e}") from None


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts from ``.txt`` (one per line; blank lines and ``#`` comments are not prompts, so prompt ``k`` is the
    ``k``-th prompt line — :func:`read_prompt_file` reports which lines were skipped), ``.json`` (a list of strings,
    ``{"1": prompt, ...}``, or the challenge's nested pairs), ``.csv`` (column ``prompt`` / ``Prompt`` / ``caption``,
    else the first column). A UTF-8 byte-order mark (Windows editors write one) is not part of the first prompt."""
    return read_prompt_file(path).prompts


def _read_prompts(p: Path) -> PromptFile:
    skipped: list[int] = []
    if p.suffix.lower() == ".json":
        obj = json.loads(p.read_text(encoding="utf-8-sig"))
        if isinstance(obj, list):
            prompts = _strings(obj, "the list")
        elif isinstance(obj, dict):
            prompts = flatten_challenge_prompts(obj)
        else:
            raise InputError(f"the JSON is {json.dumps(obj)[:40]}, not a list or object of prompts")
    elif p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            prompts = []
        else:
            key = next((k for k in ("prompt", "Prompt", "caption", "Caption") if k in rows[0]), list(rows[0])[0])
            prompts = [r[key] or "" for r in rows]
    else:
        prompts = []
        for i, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                prompts.append(line)
            else:
                skipped.append(i)
    prompts = [s.strip() for s in prompts]
    if not prompts:
        raise InputError("no prompts in it (one prompt per line in a .txt; a list of strings in a .json)")
    empty = [i + 1 for i, s in enumerate(prompts) if not s]
    if empty:
        raise InputError(f"empty prompt(s) at position {empty[:5]}: remove them or write the prompt")
    return PromptFile(p, prompts, skipped)


def declares_pairs(path: str | os.PathLike) -> bool:
    """Whether a prompt file itself says its prompts are (original, rephrased) pairs: the challenge JSON
    ``{qa_key: {pair_key: [A, B]}}`` with two prompts per pair. A plain list (.txt, .csv, JSON list) never does."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        obj = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    groups = list(obj.values()) if isinstance(obj, dict) else []
    return bool(groups) and all(isinstance(g, dict) and g and all(isinstance(v, list) and len(v) == 2
                                                                 for v in g.values()) for g in groups)


def challenge_filename(prompt_index: int, image_index: int, ext: str = "png") -> str:
    """``prompt{p:04d}_img{i:04d}.png`` with 1-based indices (the MEDVQA-GI submission layout)."""
    return f"prompt{prompt_index:04d}_img{image_index:04d}.{ext}"


def numbered_prompts(prompts: list[str]) -> dict[str, str]:
    """``{"1": prompt, ...}``: the ``prompts.json`` of a generated folder (1-based, as its file names)."""
    return {str(k + 1): s for k, s in enumerate(prompts)}


def read_numbered_prompts(path: str | os.PathLike) -> dict[int, str]:
    """``{prompt number (1-based): prompt}`` from a generated folder's ``prompts.json`` (:func:`numbered_prompts`)
    or any prompt file :func:`read_prompts` reads (numbered in order)."""
    p = Path(path)
    if p.suffix.lower() == ".json" and p.is_file():
        obj = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(obj, dict) and obj and all(str(k).isdigit() and isinstance(v, str) for k, v in obj.items()):
            return {int(k): v for k, v in obj.items()}
    return {i + 1: s for i, s in enumerate(read_prompts(p))}
