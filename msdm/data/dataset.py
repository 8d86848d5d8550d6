"""``ImageTextDataset``: image records → the msdm batch format (docs/CONVENTIONS.md, "Batches").

Each item is ``{"pixel_values": float [C, H, W] in [-1, 1], "caption": str, "id": str}`` plus ``"caption_original"``
when a paraphrase strategy is active. Two layouts:

* **training** (``expand_prompts=False``): one item per image; each epoch the caption is drawn from the image's
  prompts (and paraphrases) by the :class:`~msdm.data.paraphrase.ParaphraseStrategy`, seeded and epoch-dependent;
  prompt-aware augmentation (:mod:`msdm.data.augment`) may apply. Index it with ``(index, epoch)`` — what
  :class:`~msdm.data.epoch_sampler.EpochShuffleSampler` yields — or a plain ``index`` for epoch 0;
* **validation / test** (``expand_prompts=True``): one item per (image, original prompt), no augmentation, centre
  crop — every original prompt is scored, never a paraphrase.

Images are read lazily from files or from a Hugging Face dataset (``images=`` the dataset, records hold row numbers)
through :func:`msdm.data.images.load_image`. :func:`verify_records` checks them up front (header or full decode) so
bad files are counted at setup; a file that still fails when loaded raises :class:`BadImageError` under
``on_bad_sample="raise"``, and under ``"skip"`` is replaced by the next good image with a warning naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from torch.utils.data import Dataset, default_collate

from msdm.data.augment import Augment, apply_jitter, permissions
from msdm.data.captions import ImageRecord
from msdm.data.images import BadImageError, load_image, probe_image
from msdm.data.paraphrase import ParaphraseStrategy
from msdm.data.report import SkipReport, check_policy
from msdm.data.transforms import SquareTransform

VERIFY = ("none", "header", "full")


def default_verify(verify: str | None, on_bad_sample: str) -> str:
    """``verify=None``: ``"full"`` under ``on_bad_sample="skip"`` (decode every image at setup, so a file with
    corrupt data is counted in the report instead of being met mid-epoch), ``"header"`` under ``"raise"`` (fast;
    a file that still fails when decoded raises naming it)."""
    if verify is None:
        return "full" if on_bad_sample == "skip" else "header"
    return verify


class ImageSource:
    """Where the pixels of a record are: ``source`` is a file path, or a row number of ``hf_dataset``."""

    def __init__(self, hf_dataset=None, image_column: str = "image"):
        self.hf_dataset, self.image_column = hf_dataset, image_column
        if hf_dataset is not None:
            from datasets import Image as HFImage

            feat = hf_dataset.features.get(image_column)
            if isinstance(feat, HFImage) and feat.decode:
                # decode ourselves (load_image), so a corrupt cell becomes a counted bad sample, not a crash inside
                # datasets, and 16-bit / RGBA / palette images follow the documented conversions.
                self.hf_dataset = hf_dataset.cast_column(image_column, HFImage(decode=False))

    def raw(self, rec: ImageRecord):
        if isinstance(rec.source, int):
            if self.hf_dataset is None:
                raise ValueError(f"record {rec.id} points to dataset row {rec.source} but no dataset was given")
            return self.hf_dataset[rec.source][self.image_column]
        return rec.source

    def name(self, rec: ImageRecord) -> str:
        if isinstance(rec.source, int):
            return f"{rec.id} (row {rec.source} of the dataset)"
        return str(rec.source)


def verify_records(
    records: Sequence[ImageRecord],
    images: ImageSource,
    report: SkipReport,
    verify: str = "header",
    min_image_size: int = 0,
    mode: str = "RGB",
    threads: int = 8,
) -> list[ImageRecord]:
    """Return the records whose image passes ``verify`` ("none" | "header": open + size | "full": decode);
    record the others in ``report`` by kind."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
    if verify == "none" or not records:
        return list(records)

    def check(rec):
        try:
            raw = images.raw(rec)
            if verify == "full":
                load_image(raw, mode=mode, min_size=min_image_size, name=images.name(rec))
            else:
                probe_image(raw, min_size=min_image_size, name=images.name(rec))
            return None
        except BadImageError as e:
            return e

    # file reads release the GIL; a few threads hide disk latency. HF rows are read in this thread (Arrow objects
    # are not meant to be shared across threads mid-read).
    if images.hf_dataset is None and threads > 1 and len(records) > 16:
        with ThreadPoolExecutor(max_workers=threads) as ex:
            errors = list(ex.map(check, records))
    else:
        errors = [check(r) for r in records]
    good = []
    for rec, err in zip(records, errors):
        if err is None:
            good.append(rec)
        else:
            report.add(err.kind, err.name, err.detail)
    return good


class ImageTextDataset(Dataset):
    def __init__(
        self,
        records: Sequence[ImageRecord],
        images: ImageSource | None = None,
        size: int = 256,
        channels: int = 3,
        aspect: str = "crop",
        interpolation: str = "bilinear",
        strategy: str | ParaphraseStrategy = "none",
        paraphrases: Mapping[str, Sequence[str]] | None = None,
        augment: Augment | str = "none",
        expand_prompts: bool = False,
        seed: int = 0,
        min_image_size: int = 0,
        on_bad_sample: str = "raise",
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not records:
            raise ValueError("no usable images (see the bad-sample report above)")
        self.records = list(records)
        self.images = images or ImageSource()
        self.transform = SquareTransform(size, aspect, interpolation)
        self.mode = "L" if channels == 1 else "RGB"
        self.strategy = ParaphraseStrategy.parse(strategy)
        self.paraphrases = dict(paraphrases or {})
        self.augment = augment if isinstance(augment, Augment) else Augment(mode=augment)
        self.expand_prompts = bool(expand_prompts)
        self.seed, self.min_image_size = int(seed), int(min_image_size)
        self.on_bad_sample = check_policy(on_bad_sample)
        # validation/test: (record, prompt) pairs; training: one item per record
        if self.expand_prompts:
            self.items = [(r, p) for r, rec in enumerate(self.records) for p in range(len(rec.prompts))]
        else:
            self.items = [(r, -1) for r in range(len(self.records))]
        self.with_original = not self.expand_prompts and self.strategy.name != "none" and bool(self.paraphrases)
        self._perms = (
            [permissions(rec.prompts) for rec in self.records]
            if (self.augment.mode != "none" and not self.expand_prompts)
            else None
        )

    def __len__(self) -> int:
        return len(self.items)

    def caption_for(self, index: int, epoch: int = 0) -> tuple[str, str]:
        """``(caption, original)`` of item ``index`` in ``epoch`` (no image is loaded)."""
        r, p = self.items[index]
        rec = self.records[r]
        if p >= 0:
            return rec.prompts[p], rec.prompts[p]
        return self.strategy.draw(rec.prompts, self.paraphrases, self.seed, epoch, r)

    def _load(self, r: int):
        rec = self.records[r]
        return load_image(self.images.raw(rec), mode=self.mode, min_size=self.min_image_size, name=self.images.name(rec))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        # EpochShuffleSampler (msdm.data.epoch_sampler) yields (index, epoch): the epoch reaches every worker process
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)
        r, _ = self.items[i]
        try:
            img = self._load(r)
        except BadImageError as e:
            if self.on_bad_sample == "raise":
                raise
            warnings.warn(f"skipping {e} — replaced by the next image; run with verify='full' to count such files "
                          f"at setup", stacklevel=2)
            for step in range(1, min(len(self.items), 16)):
                j = (i + step) % len(self.items)
                try:
                    img = self._load(self.items[j][0])
                    i, r = j, self.items[j][0]
                    break
                except BadImageError:
                    continue
            else:
                raise
        caption, original = self.caption_for(i, epoch)
        if self._perms is not None:
            d = self.augment.decide(self._perms[r], self.seed, epoch, r)
            img = apply_jitter(img, d["jitter"])
            pixels = self.transform(img, offset=d["offset"], hflip=d["hflip"], vflip=d["vflip"])
        else:
            pixels = self.transform(img)
        item = {"pixel_values": pixels, "caption": caption, "id": self.records[r].id}
        if self.with_original:
            item["caption_original"] = original
        return item


def verify_splits(splits: dict, report: SkipReport, verify: str, min_image_size: int, mode: str) -> dict:
    """``{split: the records whose images pass}`` for ``train`` / ``val`` / ``test`` (:func:`verify_records`); a test
    split that is the validation split is checked once. Bad images go to ``report``."""
    checked: dict[str, list[ImageRecord]] = {}
    for key in ("train", "val", "test"):
        if key == "test" and splits["test"] is splits["val"]:
            checked["test"] = checked["val"]
            continue
        recs, src = splits[key]
        checked[key] = verify_records(recs, src, report, verify, min_image_size, mode)
    return checked


def emptied_splits(splits: dict, checked: dict) -> list[str]:
    """Warnings for the validation / test splits that had images but lost all of them in :func:`verify_splits`."""
    out = []
    for key, what, skipped in (("val", "validation", "validation"), ("test", "test", "testing")):
        if splits[key][0] and not checked[key] and (key == "val" or splits["test"] is not splits["val"]):
            out.append(f"the {what} split is empty after verification (all {len(splits[key][0])} of its images were "
                       f"bad, see the report): {skipped} will be skipped")
    return out


def collate(batch: list[dict]) -> dict:
    """Stack pixels, keep strings as lists (the batch format of docs/CONVENTIONS.md).

    PyTorch's ``default_collate`` does exactly this for a dict of tensors and strings, and in a worker process it
    stacks straight into shared memory, which saves a copy of every batch on its way to the main process.
    """
    return default_collate(batch)
