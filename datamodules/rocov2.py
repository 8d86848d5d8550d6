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
    """ROCOv2 radiology images and captions, official splits (module docstring)."""

    def __init__(
        self,
        data: str = "eltorio/ROCOv2-radiology",
        split: str = "train",
        val_split: str = "validation",
        test_split: str = "test",
        image_column: str = "image",
        caption_column: str = "caption",
        id_column: str = "image_id",
        captions_encoding: str | None = None,
        resolution: int = 256,
        channels: int = 3,
        aspect: str = "pad",
        interpolation: str = "bilinear",
        paraphrases: str | None = None,
        paraphrase_strategy: str = "none",
        augment: str = "none",
        hflip_p: float = 0.5,
        vflip_p: float = 0.0,
        random_crop: bool = True,
        color_jitter: float = 0.0,
        on_bad_sample: str = "raise",
        verify: str | None = None,
        min_image_size: int = 32,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        drop_last: bool = False,
        seed: int = 2204,
    ):
        super().__init__(
            data=data, image_column=image_column, caption_column=caption_column, id_column=id_column,
            captions_encoding=captions_encoding, split=split, val_split=val_split, test_split=test_split, resolution=resolution, channels=channels, aspect=aspect,
            interpolation=interpolation, paraphrases=paraphrases, paraphrase_strategy=paraphrase_strategy,
            augment=augment, hflip_p=hflip_p, vflip_p=vflip_p, random_crop=random_crop, color_jitter=color_jitter,
            on_bad_sample=on_bad_sample, verify=verify, min_image_size=min_image_size, batch_size=batch_size,
            val_batch_size=val_batch_size, num_workers=num_workers, persistent_workers=persistent_workers,
            pin_memory=pin_memory, drop_last=drop_last, seed=seed,
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
