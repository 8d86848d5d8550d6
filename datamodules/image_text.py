"""``ImageTextDataModule``: image + caption pairs from a folder with a captions table, or a Hugging Face dataset.

The generic base of every msdm DataModule; :class:`~datamodules.kvasir.KvasirVQADataModule` and
:class:`~datamodules.rocov2.ROCOv2DataModule` only override :meth:`ImageTextDataModule.load_splits` (where images and
captions are). Everything else is shared: the seeded image-level validation split, paraphrase strategies,
prompt-aware augmentation, bad-sample policy, and the loaders (docs/data.md).

The options are declared once, in :class:`ImageTextDataModule`'s signature, and held as one dataclass
(:class:`ImageTextOptions`, ``self.cfg``). A subclass takes its own arguments and passes the rest on as ``**kwargs``
(LightningCLI resolves them: ``--data.init_args.resolution`` works for every DataModule).

Examples::

    # a folder with images and captions.csv (columns image, caption; several rows per image allowed)
    dm = ImageTextDataModule(data="my_images/", resolution=256)
    # a captions table anywhere, images elsewhere, custom columns
    dm = ImageTextDataModule(data="table.jsonl", images_dir="/data/imgs", image_column="file", caption_column="text")
    # a Hugging Face dataset by hub id or local copy (save_to_disk folder, parquet, imagefolder)
    dm = ImageTextDataModule(data="user/dataset", split="train", image_column="image", caption_column="text")
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from msdm.data.augment import Augment
from msdm.data.captions import ImageRecord
from msdm.data.dataset import ImageSource, ImageTextDataset, collate, default_verify, emptied_splits, verify_splits
from msdm.data.epoch_sampler import EpochShuffleSampler
from msdm.data.hf import load_hf, select_split
from msdm.data.loader import ResumableDataLoader
from msdm.data.paraphrase import ParaphraseStrategy, resolve_paraphrases
from msdm.data.report import SkipReport, check_policy
from msdm.data.sources import find_captions_file, records_from_hf, records_from_table
from msdm.data.splits import hold_out_images
from msdm.errors import PathNotFoundError

Splits = dict[str, tuple[list[ImageRecord], ImageSource]]


class ImageTextDataModule(LightningDataModule):
    """Image–caption pairs → batches ``{"pixel_values" [B, C, H, W] in [-1, 1], "caption", "id"[, "caption_original"]}``.

    Args:
        data: a folder (images + a captions table: ``captions.csv|jsonl|json``, ``metadata.jsonl|csv`` or
            ``prompt-gt.csv``), a captions table file, a Hugging Face hub id, or a local copy of a HF dataset.
        captions_file: the captions table inside ``data`` (default: found by name, see above).
        images_dir: folder the image column is relative to (default: the table's folder, or its ``images/``
            subfolder when the image names are there).
        image_column / caption_column / id_column: column names (``None``: guessed for tables; ``image`` and
            ``caption`` for HF datasets). ``id_column`` names a stable image id (default: file stem or content hash).
        captions_encoding: text encoding of the captions table (default UTF-8, with or without BOM; ``cp1252`` for
            many Excel exports).
        split / val_split / test_split: HF splits. Without ``val_split`` the validation set is a seeded,
            image-level ``val_fraction`` of the training images; without ``test_split`` test = validation.
        val_fraction: share of images held out (Prompt to Polyp: 10 %).
        resolution / channels / aspect / interpolation: output ``channels × resolution × resolution``; aspect
            ``crop`` | ``pad`` | ``squash`` (msdm.data.transforms).
        paraphrases / paraphrase_strategy: a paraphrase file (reference CSV or JSON map; ``"rules"`` or
            ``"rules:N"`` generates fact-checked rule-based paraphrases at setup) and ``none | add | substitute(p) |
            replace`` (training only; validation/test always use the original prompts).
        augment / hflip_p / vflip_p / random_crop / color_jitter: ``none`` or ``prompt_aware`` (msdm.data.augment).
        on_bad_sample: ``raise`` (one error listing every bad sample and its fix) or ``skip`` (counted, reported).
        verify: image check at setup: ``header`` (open + size + end marker, fast: catches cut-short JPEG/PNG files),
            ``full`` (decode: also catches corrupt data inside a file) or ``none``. Default (``None``): ``full`` under
            ``on_bad_sample="skip"`` (every bad file is counted in the report), ``header`` under ``"raise"``.
        min_image_size: images with a shorter side are bad (``too_small``).
        batch_size / val_batch_size / num_workers / persistent_workers / pin_memory / drop_last: DataLoader options.
        seed: split, prompt draws, augmentation and shuffling.
    """

    #: base arguments a subclass sets itself (they are not its arguments: kept out of its hparams)
    FILLED: tuple[str, ...] = ()

    def __init__(
        self,
        data: str | None = None,
        captions_file: str | None = None,
        images_dir: str | None = None,
        image_column: str | None = None,
        caption_column: str | None = None,
        id_column: str | None = None,
        captions_encoding: str | None = None,
        split: str = "train",
        val_split: str | None = None,
        test_split: str | None = None,
        val_fraction: float = 0.1,
        resolution: int = 256,
        channels: int = 3,
        aspect: str = "crop",
        interpolation: str = "bilinear",
        paraphrases: str | None = None,
        paraphrase_strategy: str = "none",
        augment: str = "none",
        hflip_p: float = 0.5,
        vflip_p: float = 0.5,
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
        super().__init__()
        # self.cfg: the resolved settings the code reads. self.hparams: what the user passed to the concrete class
        # (a subclass such as KvasirVQADataModule fills some base arguments itself), for logs and checkpoints.
        given = locals()
        self.cfg = ImageTextOptions(**{f.name: given[f.name] for f in dataclasses.fields(ImageTextOptions)})
        own = self._own_arguments()
        self.save_hyperparameters(ignore=[k for k in vars(self.cfg) if k not in own])
        check_policy(on_bad_sample)
        self.strategy = ParaphraseStrategy.parse(paraphrase_strategy)  # validate early (CLI typos)
        self.augment = Augment(augment, hflip_p, vflip_p, random_crop, color_jitter)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.report: dict = {}
        self.skipped = SkipReport()
        self.train_dataset: ImageTextDataset | None = None
        self.val_dataset: ImageTextDataset | None = None
        self.test_dataset: ImageTextDataset | None = None

    @classmethod
    def _own_arguments(cls) -> set[str]:
        """The arguments of the concrete class: its signature, plus the base's it passes on with ``**kwargs``."""
        params = inspect.signature(cls.__init__).parameters
        own = {n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD}
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            own |= {f.name for f in dataclasses.fields(ImageTextOptions)} - set(cls.FILLED)
        return own

    # ------------------------------------------------------------------------------------------------------------
    # Where the data is (subclasses override load_splits)
    # ------------------------------------------------------------------------------------------------------------

    def _is_table_source(self) -> Path | None:
        """The captions table when ``data`` is a folder with one (or a table file), else ``None``."""
        h = self.cfg
        if h.data is None:
            return None
        p = Path(os.path.expanduser(h.data))
        if p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
            return p
        if p.is_dir():
            if h.captions_file:
                t = Path(h.captions_file)
                return t if t.is_absolute() else p / t
            return find_captions_file(p)
        return None

    def load_splits(self, report: SkipReport) -> Splits:
        """``{"train": (records, images)[, "val": ...][, "test": ...]}``; bad rows go to ``report``."""
        h = self.cfg
        if h.data is None:
            raise ValueError(f"{type(self).__name__}: pass data= (a folder, captions table, HF hub id or local copy)")
        table = self._is_table_source()
        if table is not None:
            if not table.is_file():
                raise PathNotFoundError(f"captions table {table} not found (captions_file=)", table)
            images_dir = h.images_dir
            if images_dir and not Path(images_dir).is_absolute() and Path(h.data).is_dir():
                images_dir = str(Path(h.data) / images_dir)
            recs = records_from_table(table, images_dir, report, h.image_column, h.caption_column, h.id_column,
                                      encoding=h.captions_encoding)
            return {"train": (recs, ImageSource())}
        return self.splits_from_hf(load_hf(h.data), report)

    def splits_from_hf(self, ds, report: SkipReport, captions: dict | None = None) -> Splits:
        """Records for ``split`` / ``val_split`` / ``test_split`` of a HF dataset (or DatasetDict)."""
        h = self.cfg
        image_column, caption_column = h.image_column or "image", h.caption_column or "caption"
        out: Splits = {}
        for key, name in (("train", h.split), ("val", h.val_split), ("test", h.test_split)):
            if not name:
                continue
            d = select_split(ds, name, str(h.data), only_split_ok=key == "train")
            recs = records_from_hf(d, report, image_column, caption_column, h.id_column, captions=captions,
                                   where=f"{h.data} [{name}]")
            out[key] = (recs, ImageSource(d, image_column))
        return out

    # ------------------------------------------------------------------------------------------------------------
    # Lightning hooks
    # ------------------------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        # Populate the HF cache once per node when a hub id is used and the network allows it; offline this is the
        # same cache lookup setup() does, with the same clear error.
        h = self.cfg
        if h.data and not Path(os.path.expanduser(h.data)).exists() and self._is_table_source() is None:
            load_hf(h.data)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        h = self.cfg
        report = SkipReport()
        # Prompt to Polyp protocol: without a validation split, val_fraction of the *images* with all their prompts
        splits = hold_out_images(self.load_splits(report), h.val_fraction, h.seed)
        train_src = splits["train"][1]
        checked = verify_splits(splits, report, default_verify(h.verify, h.on_bad_sample), h.min_image_size,
                                "L" if h.channels == 1 else "RGB")
        self.skipped = report
        report.raise_or_report(h.on_bad_sample, "samples", type(self).__name__)
        for message in emptied_splits(splits, checked):
            rank_zero_warn(f"{type(self).__name__}: {message}")
        train_prompts = list(dict.fromkeys(p for r in checked["train"] for p in r.prompts))
        paraphrases, para_desc = resolve_paraphrases(h.paraphrases, train_prompts, h.seed)
        covered = sum(1 for p in train_prompts if paraphrases.get(p))
        if self.strategy.name != "none" and not paraphrases:
            rank_zero_warn(f"paraphrase_strategy={self.strategy} but no paraphrases= file: training uses the "
                           f"original prompts only")
        if not checked["train"]:
            raise ValueError(f"{type(self).__name__}: no usable training images in {h.data}; {report.summary()}")
        common = dict(size=h.resolution, channels=h.channels, aspect=h.aspect, interpolation=h.interpolation,
                      seed=h.seed, min_image_size=h.min_image_size, on_bad_sample=h.on_bad_sample)
        self.train_dataset = ImageTextDataset(checked["train"], train_src, strategy=self.strategy,
                                              paraphrases=paraphrases, augment=self.augment, **common)
        # an empty validation/test split (val_fraction=0) means no validation: its loader is an empty list
        self.val_dataset = (ImageTextDataset(checked["val"], splits["val"][1], expand_prompts=True, **common)
                            if checked["val"] else None)
        self.test_dataset = (self.val_dataset if checked["test"] is checked["val"] else
                             ImageTextDataset(checked["test"], splits["test"][1], expand_prompts=True, **common)
                             if checked["test"] else None)
        self.report = {
            "train_images": len(checked["train"]),
            "train_prompts": sum(len(r.prompts) for r in checked["train"]),
            "val_images": len(checked["val"]),
            "val_items": len(self.val_dataset) if self.val_dataset else 0,
            "test_images": len(checked["test"]),
            "test_items": len(self.test_dataset) if self.test_dataset else 0,
            "prompts_with_paraphrases": covered,
            "paraphrases": para_desc,
            "unique_train_prompts": len(train_prompts),
            "skipped": dict(report.counts),
            "skipped_total": report.total,
        }
        rank_zero_info(self.summary())

    def summary(self) -> str:
        r = self.report
        s = (f"{type(self).__name__}: train {r['train_images']} images ({r['train_prompts']} prompts), "
             f"val {r['val_images']} images ({r['val_items']} image-prompt pairs), test {r['test_images']} images; "
             f"paraphrase strategy {self.strategy} ({r['prompts_with_paraphrases']}/{r['unique_train_prompts']} "
             f"training prompts have paraphrases: {r['paraphrases']}); {self.skipped.summary('samples skipped')}")
        return s

    def _loader(self, ds: ImageTextDataset | None, train: bool) -> DataLoader | list:
        if ds is None:
            return []  # Lightning skips validation/test with an empty list
        h = self.cfg
        workers = int(h.num_workers)
        # training: resumable mid-epoch (its position is saved in Lightning's checkpoints, msdm.data.loader)
        return (ResumableDataLoader if train else DataLoader)(
            ds,
            batch_size=h.batch_size if train else (h.val_batch_size or h.batch_size),
            sampler=EpochShuffleSampler(len(ds), seed=h.seed, shuffle=True) if train else None,
            shuffle=False if not train else None,
            num_workers=workers,
            persistent_workers=bool(h.persistent_workers) and workers > 0,
            pin_memory=bool(h.pin_memory),
            drop_last=bool(h.drop_last) if train else False,
            collate_fn=collate,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader | list:
        self.setup("validate")
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader | list:
        self.setup("test")
        return self._loader(self.test_dataset, train=False)


#: The DataModule options as one dataclass (``self.cfg``), made from :class:`ImageTextDataModule`'s signature: the
#: options are declared once, there, with their documentation.
ImageTextOptions = dataclasses.make_dataclass(
    "ImageTextOptions",
    [(n, p.annotation, dataclasses.field(default=p.default))
     for n, p in inspect.signature(ImageTextDataModule.__init__).parameters.items() if n != "self"],
)
ImageTextOptions.__doc__ = "The options of :class:`ImageTextDataModule` (its Args), resolved: what the loaders read."
