"""Prompt files, read in one place: plain text, JSON lists, the MEDVQA-GI challenge JSON, CSV, and the numbered
``prompts.json`` of a generated folder (``{"1": prompt, ...}``, written by :func:`numbered_prompts`)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from msdm.errors import InputError, PathNotFoundError


def flatten_challenge_prompts(obj: dict) -> list[str]:
    """``{qa_key: {pair_key: [prompt_A, prompt_B]}}`` → ``[A1, B1, A2, B2, ...]`` in file order (the challenge
    script's flattening; prompt index ``i`` is 1-based in file names)."""
    out: list[str] = []
    for group in obj.values():
        if isinstance(group, dict):
            for pair in group.values():
                out.extend(pair if isinstance(pair, list) else [pair])
        elif isinstance(group, list):
            out.extend(group)
        else:
            out.append(str(group))
    return out


def read_prompts(path: str | os.PathLike) -> list[str]:
    """Prompts from ``.txt`` (one per line, blank lines and ``#`` comments skipped), ``.json`` (a list, or the
    challenge's nested pairs), ``.csv`` (column ``prompt`` or ``Prompt``, else the first column)."""
    p = Path(path)
    if not p.is_file():
        raise PathNotFoundError(f"prompt file {p} does not exist", p)
    try:
        return _read_prompts(p)
    except UnicodeDecodeError as e:
        raise InputError(f"{p} is not UTF-8 text (byte {e.start}: {e.reason}); re-save it as UTF-8") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from e


def _read_prompts(p: Path) -> list[str]:
    if p.suffix.lower() == ".json":
        obj = json.loads(p.read_text(encoding="utf-8"))
        prompts = [str(x) for x in obj] if isinstance(obj, list) else flatten_challenge_prompts(obj)
    elif p.suffix.lower() == ".csv":
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            prompts = []
        else:
            key = next((k for k in ("prompt", "Prompt", "caption", "Caption") if k in rows[0]), list(rows[0])[0])
            prompts = [r[key] for r in rows]
    else:
        prompts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        prompts = [ln for ln in prompts if ln and not ln.startswith("#")]
    prompts = [s.strip() for s in prompts]
    if not prompts or any(not s for s in prompts):
        raise InputError(f"{p}: empty prompt list or empty prompt (line {[i + 1 for i, s in enumerate(prompts) if not s][:5]})")
    return prompts


def declares_pairs(path: str | os.PathLike) -> bool:
    """Whether a prompt file itself says its prompts are (original, rephrased) pairs: the challenge JSON
    ``{qa_key: {pair_key: [A, B]}}`` with two prompts per pair. A plain list (.txt, .csv, JSON list) never does."""
    p = Path(path)
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
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
