"""``ROCOv2DataModule``: radiology figures (X-ray, CT, MRI, ...) with captions, the official splits.

Sources (``data=``):

* the Hugging Face dataset (default ``eltorio/ROCOv2-radiology``: columns ``image``, ``image_id``, ``caption``,
  ``cui``; splits ``train`` / ``validation`` / ``test``) by hub id or local copy (``save_to_disk`` folder, parquet);
* the local ROCOv2 release layout: ``train/``, ``valid/``, ``test/`` image folders (``<ID>.jpg``; ``train_images/train``
  as unzipped from Zenodo works too) next to ``train_captions.csv``, ``valid_captions.csv``, ``test_captions.csv``
  with columns ``ID,Caption``.

The official splits are used as they are (about 60 000 / 10 000 / 10 000 images in the paper); no seeded split.

Grayscale is handled explicitly: most ROCOv2 images are single-channel; ``channels=3`` (default, what the MSDM VAE
and the large pretrained models take) replicates the gray channel, ``channels=1`` keeps one channel for models built
for it. RGB figures (coloured annotations, some ultrasound) are converted to luma for ``channels=1``.

Aspect: ``pad`` by default (letterbox on black to a square, then resize): radiology figures range from portrait
to wide multi-panel strips, and a centre crop would cut away anatomy the caption may describe. ``aspect="crop"``
gives the reference's centre crop instead.
"""

from __future__ import annotations

from pathlib import Path

from msdm.data.dataset import ImageSource
from msdm.data.hf import load_hf
from msdm.data.report import SkipReport
from msdm.data.sources import records_from_table
from msdm.errors import PathNotFoundError

from .image_text import ImageTextDataModule, Splits

LOCAL_SPLIT_NAMES = {"train": "train", "validation": "valid", "valid": "valid", "val": "valid", "test": "test"}


def local_layout(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*_captions.csv"))


def _images_dir(folder: Path, name: str) -> Path:
    for cand in (folder / name, folder / f"{name}_images" / name, folder / f"{name}_images", folder / "images" / name):
        if cand.is_dir():
            return cand
    return folder / name  # reported as missing files, with this path


class ROCOv2DataModule(ImageTextDataModule):
    """ROCOv2 radiology images and captions, official splits (module docstring).

    Args (beyond :class:`~datamodules.image_text.ImageTextDataModule`, whose other options pass as ``**kwargs``):
        data / split / val_split / test_split / image_column / caption_column / id_column: the dataset and its
            columns (defaults: the HF copy ``eltorio/ROCOv2-radiology`` and its official splits).
        aspect / vflip_p: ``pad`` (radiographs are not square; nothing is cut off) and no vertical flips.
    """

    FILLED = ("captions_file", "images_dir")

    def __init__(
        self,
        data: str = "eltorio/ROCOv2-radiology",
        split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        image_column: str = "image",
        caption_column: str = "caption",
        id_column: str = "image_id",
        aspect: str = "pad",
        vflip_p: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            data=data, captions_file=None, images_dir=None, image_column=image_column, caption_column=caption_column,
            id_column=id_column, split=split, val_split=val_split, test_split=test_split, aspect=aspect,
            vflip_p=vflip_p, **kwargs,
        )

    def _is_table_source(self):
        return None

    def prepare_data(self) -> None:
        p = Path(str(self.cfg.data)).expanduser()
        if not p.exists():
            load_hf(self.cfg.data)

    def load_splits(self, report: SkipReport) -> Splits:
        h = self.cfg
        folder = Path(str(h.data)).expanduser()
        if not local_layout(folder):
            return self.splits_from_hf(load_hf(h.data), report)
        out: Splits = {}
        for key, split in (("train", h.split), ("val", h.val_split), ("test", h.test_split)):
            if not split:
                continue
            name = LOCAL_SPLIT_NAMES.get(split, split)
            table = folder / f"{name}_captions.csv"
            if not table.is_file():
                raise PathNotFoundError(f"{table} not found: the local ROCOv2 layout has {name}/ and "
                                        f"{name}_captions.csv (columns ID,Caption) for each split", table)
            recs = records_from_table(table, _images_dir(folder, name), report, image_column="ID",
                                      caption_column="Caption", encoding=h.captions_encoding)
            out[key] = (recs, ImageSource())
        return out
