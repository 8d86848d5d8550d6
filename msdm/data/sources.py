"""Turn a folder + captions table, or a Hugging Face dataset, into :class:`~msdm.data.captions.ImageRecord` lists.

Shared by every DataModule (generic, Kvasir-VQA / MEDVQA-GI, ROCOv2), so each source only says where its images
and captions are and which columns to use.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from msdm.data.captions import ColumnError, ImageRecord, group_by_image, read_caption_rows, read_table
from msdm.data.report import SkipReport

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_COLUMN_GUESSES = ("image", "file_name", "filename", "Filename", "file", "path", "image_path", "ID", "id")
CAPTION_COLUMN_GUESSES = ("caption", "Caption", "text", "prompt", "Prompt", "captions")
CAPTION_FILE_GUESSES = ("captions.csv", "captions.jsonl", "captions.json", "metadata.jsonl", "metadata.csv",
                        "prompt-gt.csv")


def guess_column(found: Sequence[str], given: str | None, guesses: Sequence[str], arg: str, where: str) -> str:
    """``given`` if set (it must exist), else the first of ``guesses`` present in ``found``."""
    found = list(found)
    if given:
        if given not in found:
            raise ColumnError(f"{where}: column {given!r} not found; the table has {found}. Set {arg} to one of those.")
        return given
    for g in guesses:
        if g in found:
            return g
    raise ColumnError(f"{where}: cannot tell which column holds the {arg.replace('_column', '')}; the table has "
                      f"{found}. Set {arg} to one of those.")


def resolve_image_path(images_dir: Path, name: str) -> str:
    """``images_dir / name``; a name without a suffix gets the first of :data:`IMAGE_SUFFIXES` that exists (the
    reference accepts ``Filename`` with or without ``.jpg``)."""
    p = Path(name)
    if not p.is_absolute():
        p = images_dir / p
    if p.suffix.lower() not in IMAGE_SUFFIXES and not p.exists():
        for suf in IMAGE_SUFFIXES:
            if (q := p.with_name(p.name + suf)).exists():
                return str(q)
        return str(p.with_name(p.name + ".jpg"))  # reported as missing with this name
    return str(p)


def _default_images_dir(folder: Path, names: list[str], sample: int = 20) -> Path:
    """``folder``, or ``folder/images`` when that is where the table's (relative) image names are (checked on the
    first ``sample`` names: more of them exist under ``images/`` than next to the table)."""
    sub = folder / "images"
    if not sub.is_dir():
        return folder
    names = [n for n in names if n and not Path(n).is_absolute()][:sample]

    def found(root):
        return sum(Path(resolve_image_path(root, n)).exists() for n in names)

    return sub if found(sub) > found(folder) else folder


def find_captions_file(folder: Path) -> Path | None:
    for name in CAPTION_FILE_GUESSES:
        if (folder / name).is_file():
            return folder / name
    return None


def records_from_table(
    table: str | os.PathLike,
    images_dir: str | os.PathLike | None,
    report: SkipReport,
    image_column: str | None = None,
    caption_column: str | None = None,
    id_column: str | None = None,
    encoding: str | None = None,
) -> list[ImageRecord]:
    """Records from a captions table whose image column names files under ``images_dir``; several rows per image
    are grouped (one record, many prompts). Ids are file stems unless ``id_column`` is given.

    Without ``images_dir`` the names are relative to the table's folder, or to its ``images/`` subfolder when the
    names are found there and not next to the table (the layout ``folder/captions.csv`` + ``folder/images/``).
    """
    table = Path(table)
    _, cols = read_table(table, encoding)
    img_col = guess_column(cols, image_column, IMAGE_COLUMN_GUESSES, "image_column", str(table))
    cap_col = guess_column(cols, caption_column, CAPTION_COLUMN_GUESSES, "caption_column", str(table))
    rows = read_caption_rows(table, img_col, cap_col, id_column, encoding)
    root = Path(images_dir) if images_dir else _default_images_dir(table.parent, [r[0] for r in rows])
    resolved = []
    for image, cap, iid in rows:
        if not image:
            report.add("missing", f"{table.name} row with caption {str(cap)[:40]!r}", "empty image name")
            continue
        resolved.append((resolve_image_path(root, image), cap, iid))
    return group_by_image(resolved, report)


def _hf_image_ids(ds, image_column: str) -> list[str]:
    """Image ids for a dataset without an id column: a content hash of the image bytes (so rows that repeat an
    image group together), shown as the file stem when stems and hashes correspond one to one."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if ds._indices is None:  # fast path: read the Arrow column, not decoded rows
        col = ds.data.column(image_column)
        if pa.types.is_struct(col.type):
            paths = pc.struct_field(col, "path").to_pylist()
            hashes = []
            for chunk in pc.struct_field(col, "bytes").chunks:
                hashes.extend(_hash_bytes(b) for b in chunk.to_pylist())
        else:  # a plain string column of paths
            paths, hashes = [str(x) if x else None for x in col.to_pylist()], [None] * len(col)
    else:  # a selected/filtered view: row access
        view = ds.select_columns([image_column])
        if type(view.features[image_column]).__name__ == "Image":
            view = view.cast_column(image_column, _no_decode())
        cells = view[image_column]
        paths = [(c or {}).get("path") if isinstance(c, dict) else c for c in cells]
        hashes = [_hash_bytes((c or {}).get("bytes")) if isinstance(c, dict) else None for c in cells]
    stems = [Path(p).stem if p else None for p in paths]
    if all(h is None for h in hashes):
        if any(s is None for s in stems):
            raise ColumnError("the image column holds neither bytes nor paths; set id_column to a column with image ids")
        return stems
    pairs = {(h, s) for h, s in zip(hashes, stems)}
    one_to_one = (None not in stems and len(pairs) == len({h for h, _ in pairs}) == len({s for _, s in pairs}))
    return [s if one_to_one else (h or s) for h, s in zip(hashes, stems)]


def _hash_bytes(b) -> str | None:
    return hashlib.blake2b(b, digest_size=8).hexdigest() if b else None


def _no_decode():
    from datasets import Image

    return Image(decode=False)


def guess_hf_columns(ds, image_column: str | None, caption_column: str | None, where: str = "dataset",
                     need_caption: bool = True) -> tuple[str, str | None]:
    """The image and caption columns of a Hugging Face ``Dataset``: the ones given (they must exist), else guessed
    as for a table — the image column is the column of the ``Image`` feature type (if exactly one), else the first
    of :data:`IMAGE_COLUMN_GUESSES`; the caption column the first of :data:`CAPTION_COLUMN_GUESSES` (``caption``,
    ``text``, ``prompt``, ...)."""
    cols = list(ds.column_names)
    if image_column is None:
        typed = [c for c in cols if type(ds.features.get(c)).__name__ == "Image"]
        if len(typed) == 1:
            image_column = typed[0]
    image_column = guess_column(cols, image_column, IMAGE_COLUMN_GUESSES, "image_column", where)
    if not need_caption:
        return image_column, None
    caption_column = guess_column(cols, caption_column, CAPTION_COLUMN_GUESSES, "caption_column", where)
    return image_column, caption_column


def records_from_hf(
    ds,
    report: SkipReport,
    image_column: str | None = "image",
    caption_column: str | None = "caption",
    id_column: str | None = None,
    captions: dict[str, list[str]] | None = None,
    where: str = "dataset",
) -> list[ImageRecord]:
    """Records from a Hugging Face ``Dataset``; ``source`` is the first row of each image.

    Captions come from ``caption_column`` (several rows per image are grouped) or, with ``captions``
    (``{image id: [caption, ...]}``), from that map: images absent from the map are counted as ``no_caption``
    and captions whose image is absent as ``missing``. A column given as ``None`` is guessed
    (:func:`guess_hf_columns`).
    """
    if image_column is None or (caption_column is None and captions is None):
        image_column, guessed = guess_hf_columns(ds, image_column, caption_column, where, captions is None)
        caption_column = guessed if captions is None else caption_column
    cols = list(ds.column_names)
    wanted = {"image_column": image_column}
    if captions is None:
        wanted["caption_column"] = caption_column
    if id_column:
        wanted["id_column"] = id_column
    missing = {a: c for a, c in wanted.items() if c not in cols}
    if missing:
        raise ColumnError(f"{where}: column(s) {sorted(missing.values())} not found; the dataset has {cols}. "
                          f"Set {', '.join(missing)} to one of those.")
    ids = [str(x) for x in ds[id_column]] if id_column else _hf_image_ids(ds, image_column)
    if captions is None:
        rows: Iterable = ((i, cap, iid) for i, (cap, iid) in enumerate(zip(ds[caption_column], ids)))
        return group_by_image(rows, report)
    first_row: dict[str, int] = {}
    for i, iid in enumerate(ids):
        first_row.setdefault(iid, i)
    rows = []
    for iid, caps in captions.items():
        if iid not in first_row:
            report.add("missing", iid, "captioned image id not in the dataset")
            continue
        rows.extend((first_row[iid], c, iid) for c in caps)
    for iid in first_row:
        if iid not in captions:
            report.add("no_caption", iid, "image id not in the captions file")
    return group_by_image(rows, report)
