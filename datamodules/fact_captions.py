"""``FactCaptionDataModule``: real frames with masks (Kvasir-SEG layout) and captions from their true facts.

No captions file: each frame's facts (polyp count, size class, locations from its mask; the box artefact and text
from its pixels: :mod:`msdm.facts.table`, computed once and cached) are written as true MEDVQA-GI sentences, and
each training epoch a caption joins 1..``caption_facts`` of them (:class:`msdm.facts.dataset.FactFramesDataset`).

Examples::

    dm = FactCaptionDataModule(data="../shared/data/kvasir-seg-extra", resolution=64, caption_facts=8)
    # train on one folder, validate on another; state only the box artefact
    dm = FactCaptionDataModule(data="../shared/data/kvasir-seg-extra", val_data="../shared/data/kvasir-seg",
                               facts=["box"])

In YAML: ``class_path: datamodules.FactCaptionDataModule`` (configs/msdm_unet_kvasir_seg.yaml).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from msdm.data.dataset import collate
from msdm.data.epoch_sampler import EpochShuffleSampler
from msdm.data.loader import ResumableDataLoader
from msdm.data.splits import split_ids
from msdm.facts.dataset import FRAME_FACTS, FactFramesDataset
from msdm.facts.table import frames_of

#: Validation prompts for sample grids: true sentences of real frames, and their contrasts.
DEFAULT_VALIDATION_PROMPTS: tuple[str, ...] = (
    "Generate an image containing a polyp.",
    "Generate an image containing a green/black box artefact.",
    "Generate an image not containing a green/black box artefact.",
    "Generate an image with a polyp of size < 5mm.",
    "Generate an image with a polyp of size >20mm.",
    "Generate an image with 2 polyps.",
    "Generate an image with an an abnormality located in the center.",
    "Generate an image with an an abnormality located in the upper-left.",
)


def _folders(data: str | list[str] | None) -> list[str]:
    if data is None:
        return []
    return [data] if isinstance(data, str) else list(data)


class FactCaptionDataModule(LightningDataModule):
    """Image + mask folders → ``{"pixel_values", "caption", "id"}`` batches with true-fact captions.

    Args:
        data: one image + mask folder (``images/``, ``masks/``, same names) or a list of them.
        val_data: folder(s) for validation and test; default: a seeded ``val_fraction`` of ``data``'s frames.
        val_fraction: share of ``data``'s frames held out when ``val_data`` is not given (0: no validation).
        resolution: square side of the images (frames are centre-cropped, then resized).
        caption_facts: training captions join 1..K true sentences (1: one per step, the paper's recipe).
        facts: facts captions may state (subset of ``procedure, text, box, polyp, polyp_count, polyp_sizes,
            polyp_locations``; default all that are known).
        procedure: the folders' procedure stated in captions (``colonoscopy`` for Kvasir-SEG), or ``None``.
        overlay_labels: a CSV of hand labels (``file, box, text``) that replace the detected box / text where given
            (``msdm/assets/kvasir_seg_overlay_labels.csv``: all 698 shared Kvasir-SEG frames). Text is stated only
            where a label gives it: no detector reads it reliably (docs/metrics.md).
        flips: mirror frames known to show neither box nor text, with their location facts (training only).
        seed: split, caption draws, flips and shuffling.
        batch_size / num_workers: DataLoader options.
        val_prompts: prompts for validation sample grids.
    """

    def __init__(
        self,
        data: str | list[str] | None = None,
        val_data: str | list[str] | None = None,
        val_fraction: float = 0.1,
        resolution: int = 64,
        caption_facts: int = 1,
        facts: list[str] | None = None,
        procedure: str | None = "colonoscopy",
        overlay_labels: str | None = None,
        flips: bool = True,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        val_prompts: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if not _folders(data):
            raise ValueError("FactCaptionDataModule: pass data= (an image + mask folder or a list of them)")
        unknown = set(facts or ()) - set(FRAME_FACTS)
        if unknown:
            raise ValueError(f"facts: {sorted(unknown)} are not facts of a real frame; choose from {FRAME_FACTS}")
        self._val_prompts = list(val_prompts) if val_prompts else list(DEFAULT_VALIDATION_PROMPTS)
        self.train_dataset: FactFramesDataset | None = None
        self.val_dataset: FactFramesDataset | None = None

    @property
    def validation_prompts(self) -> list[str]:
        return list(self._val_prompts)

    @staticmethod
    def frames_of(folders: list[str], overlay_labels: str | None = None) -> list[tuple[str, Path, object]]:
        """``[(id, image path, FrameFacts)]`` of the folders; ids are ``<folder name>/<stem>``
        (:func:`msdm.facts.table.frames_of`)."""
        return frames_of(folders, overlay_labels)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        h = self.hparams
        frames = self.frames_of(_folders(h.data), h.overlay_labels)
        if h.val_data is not None:
            val = self.frames_of(_folders(h.val_data), h.overlay_labels)
        else:
            _, val_ids = split_ids([f[0] for f in frames], h.val_fraction, h.seed)
            held = set(val_ids)
            val = [f for f in frames if f[0] in held]
            frames = [f for f in frames if f[0] not in held]
        common = dict(resolution=h.resolution, seed=h.seed, facts=h.facts, procedure=h.procedure)
        self.train_dataset = FactFramesDataset(frames, caption_facts=h.caption_facts, flips=h.flips, **common)
        self.val_dataset = FactFramesDataset(val, caption_facts=h.caption_facts, fixed=True, **common) if val else None
        rank_zero_info(f"FactCaptionDataModule: train {len(frames)} frames, val {len(val)} frames, captions of 1.."
                       f"{h.caption_facts} true facts ({', '.join(self.train_dataset.facts)})")

    def _loader(self, ds: FactFramesDataset | None, train: bool) -> DataLoader | list:
        if ds is None:
            return []
        workers = int(self.hparams.num_workers)
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if (train and trainer is not None) else 0
        return (ResumableDataLoader if train else DataLoader)(
            ds,
            batch_size=self.hparams.batch_size,
            sampler=EpochShuffleSampler(len(ds), seed=self.hparams.seed, shuffle=True, epoch=epoch) if train else None,
            shuffle=False if not train else None,
            num_workers=workers,
            persistent_workers=workers > 0,
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
        return self._loader(self.val_dataset, train=False)
