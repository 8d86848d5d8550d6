"""Caption tables: read (image, caption) rows from CSV / JSONL / JSON files and group them per image.

Formats read:

* any CSV/TSV with a header (``,`` ``;`` or tab, sniffed from the header line), e.g. the MEDVQA-GI 2024
  ``prompt-gt.csv`` (``Prompt;Filename``, many rows per image) or ROCOv2's ``*_captions.csv`` (``ID,Caption``);
* JSON Lines (one object per line; a caption cell may be a list of captions), e.g. ``metadata.jsonl``;
* a JSON list of objects, or a JSON object ``{image: caption | [captions]}``;
* the ImageCLEFmed MEDVQA-GI 2025 captions file ``{img_id: {group: [caption, ...]}}`` (:func:`read_challenge_captions`).

A table with the wrong column names is a configuration error, not a bad sample: :class:`ColumnError` names the
columns that were found and the argument to change. Empty captions and images without any caption are bad
samples, recorded in a :class:`~msdm.data.report.SkipReport`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from msdm.data.report import SkipReport
from msdm.errors import InputError, PathNotFoundError, UserError

DEFAULT_ENCODING = "utf-8-sig"  # UTF-8, with or without the byte-order mark Excel writes


class ColumnError(UserError, ValueError):
    """A table lacks a column the loader was told to use."""


@dataclass
class ImageRecord:
    """One training image: a stable id, where its pixels are (file path, or row of a Hugging Face dataset), and its
    original prompts (deduplicated, in table order)."""

    id: str
    source: str | int
    prompts: list[str]


def _sniff_delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    return max(counts, key=counts.get) if max(counts.values()) > 0 else ","


def read_table(path: str | os.PathLike, encoding: str | None = None) -> tuple[list[dict], list[str]]:
    """Rows (dicts) and column names of a CSV/TSV, JSONL or JSON table, decoded with ``encoding`` (default UTF-8,
    BOM allowed). A file in another encoding raises :class:`msdm.errors.InputError` naming it and the option."""
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError(f"captions table {path} not found", path)
    encoding = encoding or DEFAULT_ENCODING
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        bad = e.object[e.start:e.start + 1].hex()
        raise InputError(
            f"{path} is not {encoding} text (byte 0x{bad} at offset {e.start}). Re-save it as UTF-8, or give its "
            f"encoding: captions_encoding='cp1252' (Excel) or 'latin-1' (--data.init_args.captions_encoding=...)"
        ) from e
    except LookupError as e:
        raise InputError(f"captions_encoding={encoding!r} is not an encoding Python knows ({e})") from e
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}:{i}: not a JSON line ({e})") from e
        cols = list(dict.fromkeys(k for r in rows for k in r))
        return rows, cols
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from e
        if isinstance(data, dict):  # {image: caption | [captions]}
            rows = [{"image": k, "caption": v} for k, v in data.items()]
        elif isinstance(data, list):
            rows = data
        else:
            raise InputError(f"{path}: expected a JSON list of rows or an object {{image: caption}}")
        cols = list(dict.fromkeys(k for r in rows for k in r))
        return rows, cols
    lines = text.splitlines()
    if not lines:
        return [], []
    reader = csv.DictReader(lines, delimiter="\t" if suffix == ".tsv" else _sniff_delimiter(lines[0]))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    return rows, cols


def require_columns(found: Iterable[str], wanted: dict[str, str], where: str) -> None:
    """Raise :class:`ColumnError` if a column named in ``wanted`` (argument name → column) is not in ``found``."""
    found = list(found)
    missing = {arg: col for arg, col in wanted.items() if col not in found}
    if missing:
        hints = ", ".join(f"{arg}={col!r}" for arg, col in missing.items())
        raise ColumnError(
            f"{where}: column(s) {sorted(missing.values())} not found; the table has {found}. "
            f"Set {', '.join(missing)} to one of those (now {hints})."
        )


def _captions_of(cell) -> list:
    if cell is None:
        return [None]
    if isinstance(cell, (list, tuple)):
        return list(cell) or [None]
    return [cell]


def read_caption_rows(
    path: str | os.PathLike,
    image_column: str = "image",
    caption_column: str = "caption",
    id_column: str | None = None,
    encoding: str | None = None,
) -> list[tuple[str, str | None, str | None]]:
    """``(image, caption, id)`` rows of a caption table; ``id`` is ``None`` unless ``id_column`` is given."""
    rows, cols = read_table(path, encoding)
    wanted = {"image_column": image_column, "caption_column": caption_column}
    if id_column:
        wanted["id_column"] = id_column
    require_columns(cols, wanted, str(path))
    out = []
    for r in rows:
        for cap in _captions_of(r.get(caption_column)):
            out.append((str(r.get(image_column) or "").strip(), cap, str(r[id_column]).strip() if id_column else None))
    return out


def read_prompt_gt(path: str | os.PathLike) -> list[tuple[str, str | None, None]]:
    """The MEDVQA-GI 2024 ``prompt-gt.csv`` (``Prompt;Filename``) as ``(filename, prompt, None)`` rows."""
    return read_caption_rows(path, image_column="Filename", caption_column="Prompt")


def read_challenge_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """The MEDVQA-GI 2025 captions JSON ``{img_id: {group: [caption, ...]}}`` (a flat ``{img_id: [captions]}`` or
    ``{img_id: caption}`` works too) as ``{img_id: [caption, ...]}``; a ``.csv``/``.jsonl`` table with columns
    ``img_id`` and ``caption`` is read as well."""
    path = Path(path)
    if path.suffix.lower() != ".json":
        rows = read_caption_rows(path, image_column="img_id", caption_column="caption")
        out: dict[str, list[str]] = {}
        for img, cap, _ in rows:
            out.setdefault(img, []).append(cap)
        return out
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{img_id: {{group: [caption, ...]}}}}, got a JSON {type(data).__name__}")
    out = {}
    for img, groups in data.items():
        caps: list = []
        if isinstance(groups, dict):
            for v in groups.values():
                caps.extend(_captions_of(v))
        else:
            caps.extend(_captions_of(groups))
        out[str(img)] = caps
    return out


def group_by_image(
    rows: Iterable[tuple[str | int, str | None, str | None]],
    report: SkipReport,
    id_of=None,
) -> list[ImageRecord]:
    """Group ``(source, caption, id)`` rows into one :class:`ImageRecord` per image id (first-seen order).

    Empty captions are recorded as ``empty_caption`` (the row is left out); an image all of whose captions are empty
    is recorded as ``no_caption``. ``id_of(source)`` gives the id when a row has none (default: the file stem).
    """
    id_of = id_of or (lambda s: Path(str(s)).stem)
    records: dict[str, ImageRecord] = {}
    seen_empty: set[str] = set()
    for source, caption, image_id in rows:
        iid = image_id if image_id else id_of(source)
        text = caption.strip() if isinstance(caption, str) else ""
        if not text:
            report.add("empty_caption", str(source if isinstance(source, str) else iid), "empty or missing caption")
            seen_empty.add(iid)
            continue
        rec = records.get(iid)
        if rec is None:
            records[iid] = ImageRecord(iid, source, [text])
        elif text not in rec.prompts:
            rec.prompts.append(text)
    for iid in seen_empty - set(records):
        report.add("no_caption", iid, "every caption of this image is empty")
    return list(records.values())
