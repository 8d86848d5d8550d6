"""Labelled images for the downstream-utility experiment: real train/test sets and generated pools, decoded once.

Every source becomes a :class:`LabelledImages`: uint8 pixels ``[N, 3, R, R]`` (decoded and squared once, then
shared by every training run of the experiment), targets (class index, or a multi-hot vector for multi-label
targets), stable ids and the class/label names in target order.

Real sets come as

* a **folder per class**: ``root/<class>/*.png|jpg|...`` (multi-label: folder names are label sets, ``a+b``,
  ``none``);
* an **image + label table** (CSV/TSV/JSONL/JSON): an image column and either a label column (a class name, or a
  label set ``a+b`` for multi-label) or, multi-label, one 0/1 column per label (``label_columns``);
* a **Hugging Face dataset** (hub id in the local cache, ``save_to_disk`` folder, parquet, imagefolder): an image
  column and a label column (``ClassLabel`` names are used; a list of labels is a multi-label target).

Generated pools are folders in the MEDVQA-GI challenge layout that ``msdm generate`` writes
(``prompt{p:04d}_img{i:04d}.png`` + ``prompts.json``); an image's label is the class its prompt was given for in
the class-prompt file (:mod:`msdm.utility.class_prompts`).

Bad images follow the data layer's policy (:mod:`msdm.data.report`): ``on_bad_sample="raise"`` reports every
problem at once, ``"skip"`` leaves them out and counts them; nothing is dropped silently.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from msdm.data.captions import read_table
from msdm.data.images import BadImageError, load_image
from msdm.data.report import SkipReport, check_policy
from msdm.data.sources import IMAGE_SUFFIXES, guess_column, resolve_image_path
from msdm.data.transforms import to_square
from msdm.utility.class_prompts import ClassPrompts, parse_label_set

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
LABEL_COLUMN_GUESSES = ("label", "labels", "class", "Class", "category", "finding", "target")
IMAGE_COLUMN_GUESSES = ("image", "file_name", "filename", "Filename", "file", "path", "image_path")
_GENERATED = re.compile(r"^prompt(\d{4,})_img(\d{4,})\.png$")


@dataclass
class LabelledImages:
    """Decoded, labelled images of one source (real train, real test, or one generator's pool)."""

    images: torch.Tensor  # uint8 [N, 3, R, R]
    targets: torch.Tensor  # int64 [N] class indices, or float32 [N, L] multi-hot (multi-label)
    ids: list[str]  # stable sample ids (relative paths, table ids, dataset rows, generated file names)
    classes: list[str]  # class names (multi-class) or label names (multi-label), in target order
    multilabel: bool = False
    source: str = "real"  # "real" or the generator's name
    report: SkipReport | None = None  # what was left out while loading

    def __len__(self) -> int:
        return len(self.ids)

    def strata(self) -> list:
        """The stratum of each sample for stratified sampling: its class index, or its label set (a tuple)."""
        if self.multilabel:
            return [tuple(int(j) for j in np.flatnonzero(row)) for row in self.targets.numpy()]
        return [int(t) for t in self.targets]

    def class_counts(self) -> dict[str, int]:
        """Images per class (multi-class) or per label (multi-label: an image counts for each of its labels)."""
        if self.multilabel:
            return {c: int(n) for c, n in zip(self.classes, self.targets.sum(0).tolist())}
        counts = torch.bincount(self.targets, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts))


# ----------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------


def encode_labels(labels: list, classes: list[str] | None, multilabel: bool, where: str) -> tuple[torch.Tensor, list[str]]:
    """Class names (or label sets) → targets. ``classes`` fixes the order (the training set's); None = sorted."""
    if multilabel:
        sets = [tuple(x) for x in labels]
        found = sorted({lab for s in sets for lab in s})
    else:
        found = sorted({str(x) for x in labels})
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{where}: label(s) {unknown} are not among the training set's {classes}; the test set and "
                         f"the prompts must use the training set's class names")
    index = {c: i for i, c in enumerate(classes)}
    if multilabel:
        t = torch.zeros(len(labels), len(classes), dtype=torch.float32)
        for r, s in enumerate(sets):
            for lab in s:
                t[r, index[lab]] = 1.0
        return t, list(classes)
    return torch.tensor([index[str(x)] for x in labels], dtype=torch.int64), list(classes)


def _label_cell(value, multilabel: bool, names: list[str] | None = None):
    """One label cell → a class name, or (multi-label) a tuple of label names."""
    if multilabel:
        if isinstance(value, (list, tuple)):
            return tuple(sorted({names[v] if names and isinstance(v, int) else str(v) for v in value}))
        return parse_label_set("" if value is None else str(value))
    if isinstance(value, (list, tuple)):
        raise ValueError(f"label {value!r} is a list: pass --multilabel for multi-label targets")
    if names is not None and isinstance(value, int):
        return names[value]
    if value is None or str(value).strip() == "":
        raise ValueError("an empty label cell")
    return str(value).strip()


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------


def _decode_all(sources: list, names: list[str], resolution: int, aspect: str, report: SkipReport,
                num_threads: int) -> tuple[torch.Tensor, list[int]]:
    """Decode and square every image (threads: PIL releases the GIL while decoding); returns pixels + kept rows."""

    def one(k):
        try:
            img = to_square(load_image(sources[k], "RGB", name=names[k]), resolution, aspect)
            return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        except BadImageError as e:
            return e

    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        decoded = list(pool.map(one, range(len(sources))))
    keep, arrays = [], []
    for k, d in enumerate(decoded):
        if isinstance(d, BadImageError):
            report.add(d.kind, d.name, d.detail)
        else:
            keep.append(k)
            arrays.append(d)
    images = torch.stack(arrays) if arrays else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)
    return images, keep


def _finish(sources, names, labels, classes, multilabel, resolution, aspect, on_bad_sample, where, source_name,
            num_threads) -> LabelledImages:
    check_policy(on_bad_sample)
    if not sources:
        raise ValueError(f"{where}: no labelled images found")
    report = SkipReport()
    images, keep = _decode_all(sources, names, resolution, aspect, report, num_threads)
    report.raise_or_report(on_bad_sample, "images", where)
    if report:
        print(f"{where}: {report.summary('images')}")
    if not keep:
        raise ValueError(f"{where}: every image was bad ({report.summary('images')})")
    targets, classes = encode_labels([labels[k] for k in keep], classes, multilabel, where)
    return LabelledImages(images, targets, [names[k] for k in keep], classes, multilabel, source_name, report)


# ----------------------------------------------------------------------------------------------------------------
# Real sets
# ----------------------------------------------------------------------------------------------------------------


def load_class_folders(root: str | os.PathLike, classes: list[str] | None = None, multilabel: bool = False,
                       resolution: int = 64, aspect: str = "crop", on_bad_sample: str = "raise",
                       num_threads: int = 4) -> LabelledImages:
    """``root/<class>/<image>`` (images directly inside each class folder, sorted by name)."""
    root = Path(root)
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    sources, names, labels = [], [], []
    for d in folders:
        label = parse_label_set(d.name) if multilabel else d.name
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                sources.append(str(f))
                names.append(f"{d.name}/{f.name}")
                labels.append(label)
    return _finish(sources, names, labels, classes, multilabel, resolution, aspect, on_bad_sample, str(root), "real",
                   num_threads)


def load_label_table(table: str | os.PathLike, images_dir: str | os.PathLike | None = None,
                     image_column: str | None = None, label_column: str | None = None,
                     label_columns: list[str] | None = None, classes: list[str] | None = None,
                     multilabel: bool = False, resolution: int = 64, aspect: str = "crop",
                     on_bad_sample: str = "raise", num_threads: int = 4) -> LabelledImages:
    """A table of image paths (relative to ``images_dir``, default the table's folder) and labels."""
    table = Path(table)
    rows, cols = read_table(table)
    img_col = guess_column(cols, image_column, IMAGE_COLUMN_GUESSES, "image_column", str(table))
    root = Path(images_dir) if images_dir else table.parent
    sources, names, labels = [], [], []
    if label_columns:
        if not multilabel:
            raise ValueError("--label-columns (one 0/1 column per label) is a multi-label target: add --multilabel")
        missing = [c for c in label_columns if c not in cols]
        if missing:
            raise ValueError(f"{table}: label column(s) {missing} not found; the table has {cols}")
    else:
        lab_col = guess_column(cols, label_column, LABEL_COLUMN_GUESSES, "label_column", str(table))
    for r, row in enumerate(rows):
        image = str(row.get(img_col) or "").strip()
        if not image:
            raise ValueError(f"{table}: row {r + 1} has an empty image cell")
        if label_columns:
            label = tuple(sorted(c for c in label_columns if str(row.get(c, "0")).strip() in ("1", "1.0", "true", "True")))
        else:
            try:
                label = _label_cell(row.get(lab_col), multilabel)
            except ValueError as e:
                raise ValueError(f"{table}: row {r + 1} ({image}): {e}") from e
        sources.append(resolve_image_path(root, image))
        names.append(image)
        labels.append(label)
    return _finish(sources, names, labels, classes, multilabel, resolution, aspect, on_bad_sample, str(table), "real",
                   num_threads)


def load_hf_labelled(name_or_path: str, split: str = "train", image_column: str | None = None,
                     label_column: str | None = None, classes: list[str] | None = None, multilabel: bool = False,
                     resolution: int = 64, aspect: str = "crop", on_bad_sample: str = "raise",
                     num_threads: int = 4) -> LabelledImages:
    """A Hugging Face dataset split with an image column and a (ClassLabel, string or list) label column."""
    from datasets import Image as HFImage

    from msdm.data.hf import load_hf

    ds = load_hf(name_or_path, split)
    where = f"{name_or_path} [{split}]"
    cols = list(ds.column_names)
    img_col = guess_column(cols, image_column, IMAGE_COLUMN_GUESSES, "image_column", where)
    lab_col = guess_column(cols, label_column, LABEL_COLUMN_GUESSES, "label_column", where)
    feature = ds.features[lab_col]
    names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
    if type(ds.features[img_col]).__name__ == "Image":
        ds = ds.cast_column(img_col, HFImage(decode=False))  # decode ourselves: bad images are reported, not fatal
    labels = []
    for r, value in enumerate(ds[lab_col]):
        try:
            labels.append(_label_cell(value, multilabel, names))
        except ValueError as e:
            raise ValueError(f"{where}: row {r}: {e}") from e
    sources = list(ds[img_col])
    ids = [f"{split}/{r:06d}" for r in range(len(sources))]
    return _finish(sources, ids, labels, classes, multilabel, resolution, aspect, on_bad_sample, where, "real",
                   num_threads)


def load_labelled(source: str | os.PathLike, split: str = "train", classes: list[str] | None = None,
                  multilabel: bool = False, resolution: int = 64, aspect: str = "crop",
                  image_column: str | None = None, label_column: str | None = None,
                  label_columns: list[str] | None = None, images_dir: str | None = None,
                  on_bad_sample: str = "raise", num_threads: int = 4) -> LabelledImages:
    """Any real source (module doc): a class-folder tree, a label table file, or a Hugging Face dataset."""
    p = Path(os.path.expanduser(str(source)))
    common = {"classes": classes, "multilabel": multilabel, "resolution": resolution, "aspect": aspect,
              "on_bad_sample": on_bad_sample, "num_threads": num_threads}
    if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
        return load_label_table(p, images_dir, image_column, label_column, label_columns, **common)
    hf_markers = ("dataset_dict.json", "state.json", "metadata.jsonl", "metadata.csv", "metadata.parquet")
    if p.is_dir() and not any((p / m).exists() for m in hf_markers) and not list(p.glob("*.parquet")):
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if subdirs and any(f.suffix.lower() in IMAGE_SUFFIXES for d in subdirs for f in d.iterdir()):
            return load_class_folders(p, **common)
    return load_hf_labelled(str(source), split, image_column, label_column, **common)


# ----------------------------------------------------------------------------------------------------------------
# Generated pools
# ----------------------------------------------------------------------------------------------------------------


def load_generated(folder: str | os.PathLike, prompts: ClassPrompts, classes: list[str], name: str = "synthetic",
                   resolution: int = 64, aspect: str = "crop", on_bad_sample: str = "raise",
                   num_threads: int = 4) -> LabelledImages:
    """A challenge-layout folder; every image is labelled with the class its prompt was written for.

    The folder's ``prompts.json`` (``{"1": prompt, ...}``) names each prompt number; a prompt that is not in
    ``prompts`` is left out and counted (``unknown_prompt``). A class without any image is an error.
    """
    folder = Path(folder)
    pj = folder / "prompts.json"
    if not pj.is_file():
        raise FileNotFoundError(f"{folder}: no prompts.json; a generated folder holds prompt{{p:04d}}_img{{i:04d}}.png "
                                f"and prompts.json {{\"1\": prompt, ...}} as `msdm generate` writes them")
    numbered = {int(k): str(v) for k, v in json.loads(pj.read_text(encoding="utf-8")).items()}
    by_text = prompts.group_by_text()
    report = SkipReport()
    sources, names, labels = [], [], []
    for f in sorted(folder.iterdir()):
        m = _GENERATED.match(f.name)
        if not m:
            continue
        text = numbered.get(int(m.group(1)))
        group = by_text.get(text) if text is not None else None
        if group is None:
            report.add("unknown_prompt", f.name, f"prompt {text!r} is not in the class-prompt file" if text else
                       "its prompt number is not in prompts.json")
            continue
        sources.append(str(f))
        names.append(f"{name}/{f.name}")
        labels.append(group.labels if prompts.multilabel else group.name)
    if report:
        print(f"{folder}: {report.summary('generated images')}")
    if not sources:
        raise ValueError(f"{folder}: no image matches a prompt of the class-prompt file; generate with the same prompts "
                         f"(or pass the prompt file the folder was generated from)")
    have = {g.name for g, ok in ((g, any(t in numbered.values() for t in g.prompts)) for g in prompts.groups) if ok}
    missing = [g.name for g in prompts.groups if g.name not in have]
    if missing:
        raise ValueError(f"{folder}: no generated image for class(es) {missing}; generate them or drop those classes "
                         f"from the prompt file")
    out = _finish(sources, names, labels, classes, prompts.multilabel, resolution, aspect, on_bad_sample, str(folder),
                  name, num_threads)
    out.report.merge(report)
    return out
