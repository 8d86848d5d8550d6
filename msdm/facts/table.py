"""The facts table of an image + mask folder (Kvasir-SEG layout), computed once and cached.

``folder/images/<stem>.<ext>`` and ``folder/masks/<stem>.<ext>`` (same stems). :func:`facts_table` returns
``{stem: FrameFacts}`` for every frame; the table is computed by :func:`msdm.facts.frames.frame_facts` on the first
call and stored as a CSV (``file, polyp_count, size_class, area_fraction, locations, box, text``; lists joined by
``;``) under ``$MSDM_CACHE_DIR/facts`` (else ``$XDG_CACHE_HOME/msdm/facts``, else ``~/.cache/msdm/facts``), keyed
by the files' names and contents and :data:`FACTS_VERSION` (the definitions and detectors): a changed, added or
removed file, or new definitions, recompute it. The write is atomic (:func:`msdm.io.atomic_file`) and the content
deterministic (sorted by file, fixed float format), so two runs write byte-identical tables.
``msdm.facts.table.write_facts_csv(folder, "facts.csv")`` writes the table anywhere (e.g. to inspect it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

from PIL import Image

from msdm.errors import InputError, PathNotFoundError
from msdm.facts.frames import FrameFacts, frame_facts, read_mask
from msdm.io import atomic_file

__all__ = ["FACTS_VERSION", "COLUMNS", "IMAGE_SUFFIXES", "list_frames", "compute_facts", "facts_table",
           "facts_to_csv", "facts_from_csv", "write_facts_csv", "default_cache_dir", "read_overlay_labels",
           "with_overlay_labels", "frames_of"]

#: Bump when a definition (min area, size thresholds, cells) or an overlay detector changes: cached tables refresh.
FACTS_VERSION = "1"
COLUMNS = ("file", "polyp_count", "size_class", "area_fraction", "locations", "box", "text")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def default_cache_dir() -> Path:
    if os.environ.get("MSDM_CACHE_DIR"):
        return Path(os.environ["MSDM_CACHE_DIR"]) / "facts"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "msdm" / "facts"


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}


def list_frames(folder: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``[(stem, image path, mask path)]`` of an image + mask folder, sorted by stem.

    Raises a clear error when ``images/`` or ``masks/`` is missing or a frame has no mask (or a mask no frame)."""
    root = Path(os.path.expanduser(str(folder)))
    if not root.is_dir():
        raise PathNotFoundError(f"image + mask folder {root} not found", root)
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise InputError(f"{root} has no {sub}/ folder: the Kvasir-SEG layout is images/<name>.jpg and "
                             f"masks/<name>.jpg with the same names")
    images, masks = _by_stem(root / "images"), _by_stem(root / "masks")
    if not images:
        raise InputError(f"{root / 'images'} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    lonely = sorted(set(images) ^ set(masks))
    if lonely:
        raise InputError(f"{len(lonely)} file(s) in {root} have an image but no mask or a mask but no image "
                         f"(e.g. {', '.join(lonely[:3])}); every images/<name> needs masks/<name>")
    return [(s, images[s], masks[s]) for s in sorted(images)]


def compute_facts(folder: str | os.PathLike) -> dict[str, FrameFacts]:
    """``{stem: FrameFacts}`` of every frame, computed now (no cache)."""
    out = {}
    for stem, image, mask in list_frames(folder):
        with Image.open(image) as img:
            out[stem] = frame_facts(img.convert("RGB"), read_mask(mask))
    return out


def _flag(v: bool | None) -> str:
    return "" if v is None else str(int(v))


def facts_to_csv(facts: dict[str, FrameFacts], files: dict[str, str] | None = None) -> str:
    """The CSV text of a facts table (``files``: stem → file name written in the ``file`` column)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for stem in sorted(facts):
        f = facts[stem]
        w.writerow([(files or {}).get(stem, stem), f.polyp_count, ";".join(f.polyp_sizes), f"{f.area_fraction:.6f}",
                    ";".join(f.polyp_locations), _flag(f.box), _flag(f.text)])
    return buf.getvalue()


def facts_from_csv(text: str) -> dict[str, FrameFacts]:
    rows = list(csv.DictReader(io.StringIO(text)))
    flag = lambda v: None if v == "" else bool(int(v))  # noqa: E731
    split = lambda v: tuple(x for x in v.split(";") if x)  # noqa: E731
    return {Path(r["file"]).stem: FrameFacts(int(r["polyp_count"]), split(r["size_class"]), float(r["area_fraction"]),
                                             split(r["locations"]), flag(r["box"]), flag(r["text"])) for r in rows}


def _fingerprint(frames: list[tuple[str, Path, Path]]) -> str:
    h = hashlib.sha256(f"msdm-facts-v{FACTS_VERSION}".encode())
    for _, image, mask in frames:
        for p in (image, mask):
            h.update(f"{p.parent.name}/{p.name}".encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:24]


def facts_table(folder: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                refresh: bool = False) -> dict[str, FrameFacts]:
    """``{stem: FrameFacts}`` of an image + mask folder, from the cache or computed and cached (module docstring)."""
    frames = list_frames(folder)
    path = Path(cache_dir or default_cache_dir()) / f"{Path(str(folder)).resolve().name}-{_fingerprint(frames)}.csv"
    if path.is_file() and not refresh:
        return facts_from_csv(path.read_text())
    facts = compute_facts(folder)
    files = {stem: f"images/{image.name}" for stem, image, _ in frames}
    with atomic_file(path, "w") as f:
        f.write(facts_to_csv(facts, files))
    return facts


def read_overlay_labels(path: str | os.PathLike) -> dict[str, tuple[bool | None, bool | None]]:
    """Hand labels of the box artefact and text: ``{"<folder name>/<stem>": (box, text)}`` from a CSV with columns
    ``file, box, text`` (``file`` like ``kvasir-seg/images/<name>.jpg``; ``1`` / ``0`` / empty = not labelled), e.g.
    ``msdm/assets/kvasir_seg_overlay_labels.csv`` (all 698 shared Kvasir-SEG frames, docs/metrics.md)."""
    path = Path(path)
    if not path.is_file():
        raise PathNotFoundError(f"overlay labels file {path} not found", path)
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"file", "box", "text"} <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: an overlay labels CSV needs the columns file, box, text; it has "
                             f"{reader.fieldnames}")
        for row in reader:
            p = Path(row["file"])
            flag = lambda v: None if (v or "").strip() == "" else bool(int(v))  # noqa: E731
            out[f"{p.parts[0]}/{p.stem}"] = (flag(row["box"]), flag(row["text"]))
    return out


def with_overlay_labels(facts: dict[str, FrameFacts], folder: str | os.PathLike,
                        labels: dict[str, tuple[bool | None, bool | None]]) -> dict[str, FrameFacts]:
    """``facts`` of ``folder`` with box / text replaced by the hand labels where a frame has one (the labels are
    keyed ``<folder name>/<stem>``; a frame or value without a label keeps its detected value)."""
    from dataclasses import replace

    name = Path(str(folder)).resolve().name
    out = {}
    for stem, f in facts.items():
        box, text = labels.get(f"{name}/{stem}", (None, None))
        out[stem] = replace(f, box=f.box if box is None else box, text=f.text if text is None else text)
    return out


def write_facts_csv(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the facts table of ``folder`` to ``out`` (atomically); returns ``out``."""
    frames = list_frames(folder)
    facts = facts_table(folder)
    with atomic_file(out, "w") as f:
        f.write(facts_to_csv(facts, {stem: f"images/{image.name}" for stem, image, _ in frames}))
    return Path(out)


def frames_of(folders: str | os.PathLike | list, overlay_labels: str | os.PathLike | None = None
              ) -> list[tuple[str, Path, FrameFacts]]:
    """``[(id, image path, FrameFacts)]`` of image + mask folders (ids ``<folder name>/<stem>``, folder by folder,
    sorted by stem), with the hand labels of ``overlay_labels`` (:func:`read_overlay_labels`) applied."""
    folders = [folders] if isinstance(folders, str | os.PathLike) else list(folders)
    labels = read_overlay_labels(overlay_labels) if overlay_labels else {}
    out = []
    for folder in folders:
        table = with_overlay_labels(facts_table(folder), folder, labels)
        name = Path(str(folder)).resolve().name
        out += [(f"{name}/{stem}", image, table[stem]) for stem, image, _ in list_frames(folder)]
    return out
