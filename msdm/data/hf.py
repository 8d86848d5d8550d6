"""Open a Hugging Face dataset by hub id or from a local copy, offline-friendly.

Local copies (all give the same columns as the hub dataset):

* a ``save_to_disk`` folder (``Dataset`` or ``DatasetDict``) → ``datasets.load_from_disk``;
* parquet: one file, a folder of ``*.parquet`` (split from the file name prefix: ``train-0000.parquet``,
  ``validation.parquet``, ...), or a hub snapshot with ``data/*.parquet``;
* an ``imagefolder`` with ``metadata.jsonl`` / ``metadata.csv`` (column ``file_name`` + the caption columns).

A hub id is looked up in the local cache when offline; a miss raises
:class:`msdm.hub.MissingWeightsError` with the command that makes it available offline. A ``datasets.Dataset`` or
``DatasetDict`` already in memory (built in a notebook) is used as it is.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from msdm.hub import MissingWeightsError, check_local_path, is_local, offline_fix, pretrained_source

SPLIT_ALIASES = {
    "validation": ("validation", "valid", "val", "dev"),
    "valid": ("valid", "validation", "val", "dev"),
    "val": ("val", "validation", "valid", "dev"),
    "train": ("train", "training"),
    "test": ("test", "testing"),
}


def dataset_offline_fix(name: str) -> str:
    return offline_fix(name, "the dataset", repo_type="dataset")


def _parquet_files(root: Path) -> dict[str, list[str]] | list[str] | None:
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else ([root] if root.suffix == ".parquet" else [])
    if not files:
        return None
    by_split: dict[str, list[str]] = {}
    for f in files:
        stem = f.stem.lower()
        parent = f.parent.name.lower()
        for split in ("train", "validation", "valid", "val", "test", "raw"):
            if stem == split or stem.startswith(split + "-") or stem.startswith(split + "_") or parent == split:
                by_split.setdefault(split, []).append(str(f))
                break
    if by_split and sum(map(len, by_split.values())) == len(files):
        return by_split
    return [str(f) for f in files]


def is_in_memory_dataset(obj) -> bool:
    """A ``datasets.Dataset`` / ``DatasetDict`` object (not a path or id naming one)."""
    if obj is None or isinstance(obj, (str, os.PathLike)):
        return False
    import datasets

    return isinstance(obj, (datasets.Dataset, datasets.DatasetDict))


def describe_source(obj) -> str:
    """How to name a data source in messages: the path or id, or ``Dataset(rows, columns)`` for an object."""
    if is_in_memory_dataset(obj):
        import datasets

        if isinstance(obj, datasets.Dataset):
            return f"the in-memory Dataset ({obj.num_rows} rows, columns {obj.column_names})"
        return f"the in-memory DatasetDict (splits {list(obj)})"
    return str(obj)


def load_hf(name_or_path, split: str | None = None):
    """A ``Dataset`` (``split`` given) or ``DatasetDict`` from a hub id, a local copy (module docstring), or an
    in-memory ``Dataset`` / ``DatasetDict`` (returned as it is)."""
    import datasets

    if is_in_memory_dataset(name_or_path):
        return select_split(name_or_path, split, describe_source(name_or_path)) if split else name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        from msdm.errors import InputError

        raise InputError(f"a dataset is a path, a hub id or a datasets.Dataset / DatasetDict, not a "
                         f"{type(name_or_path).__name__}")
    s = os.path.expanduser(str(name_or_path))
    if is_local(s):
        p = Path(s)
        if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
            ds = datasets.load_from_disk(str(p))
        elif (pq := _parquet_files(p)) is not None:
            data_files = pq if isinstance(pq, dict) else {"train": pq}
            ds = datasets.load_dataset("parquet", data_files=data_files)
        elif p.is_dir() and any((p / m).exists() for m in ("metadata.jsonl", "metadata.csv", "metadata.parquet")):
            ds = datasets.load_dataset("imagefolder", data_dir=str(p))
        elif p.is_dir():
            ds = datasets.load_dataset(str(p))
        else:
            raise ValueError(
                f"{p} is a file datasets cannot open as a dataset; pass a save_to_disk folder, parquet file(s) or an "
                f"imagefolder with metadata.jsonl"
            )
        return select_split(ds, split, str(p)) if split else ds
    check_local_path(name_or_path, "dataset")  # a mistyped relative path is not a hub id
    try:
        with pretrained_source(s, what="dataset"):
            ds = datasets.load_dataset(s)
    except MissingWeightsError as e:
        raise MissingWeightsError(dataset_offline_fix(s)) from e.__cause__
    except (ConnectionError, FileNotFoundError, OSError) as e:
        if type(e).__name__ in ("DatasetNotFoundError", "ConnectionError", "LocalEntryNotFoundError") or "Couldn't reach" in str(e) or "offline" in str(e).lower():
            raise MissingWeightsError(dataset_offline_fix(s)) from e
        raise
    return select_split(ds, split, s) if split else ds


def select_split(ds, split: str, where: str = "dataset", only_split_ok: bool = False):
    """``ds[split]`` for a ``DatasetDict`` (accepting aliases such as valid/validation), ``ds`` for a ``Dataset``.

    ``only_split_ok``: if ``split`` is absent but the dataset has exactly one split, use it (a local copy of
    Kvasir-VQA's ``raw`` split loads as ``train``). Only for the training split: a validation split must exist.
    """
    import datasets

    if isinstance(ds, datasets.Dataset):
        return ds
    for name in SPLIT_ALIASES.get(split, (split,)):
        if name in ds:
            return ds[name]
    if only_split_ok and len(ds) == 1:
        (only,) = list(ds)
        warnings.warn(f"{where} has no split {split!r}; using its only split {only!r}", stacklevel=2)
        return ds[only]
    raise KeyError(f"{where} has no split {split!r}; it has {list(ds)}. Pass one of those as the split argument.")


def available_splits(ds) -> list[str]:
    import datasets

    return ["train"] if isinstance(ds, datasets.Dataset) else list(ds)
