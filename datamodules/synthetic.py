"""LightningDataModule over the embedded synthetic colonoscopy scenes (``msdm.synthetic``): the offline default.

Batches follow docs/CONVENTIONS.md: ``pixel_values`` [B, 3, H, W] in [-1, 1], ``caption`` list[str] (one true
MEDVQA-GI-style prompt per image, re-chosen every epoch), ``id`` list[str]; plus ``attributes``, a list of the
per-image ground-truth dicts (for prompt-adherence checks; modules can ignore it).

Per-epoch captions: the training loader uses :class:`~msdm.data.epoch_sampler.EpochShuffleSampler`, which yields
``(index, epoch)`` pairs. Lightning calls its ``set_epoch`` at every epoch start, and the epoch travels to worker
processes inside the indices, so it works with ``num_workers > 0`` and ``persistent_workers`` (where a
``dataset.set_epoch`` on the main process would never reach the workers' dataset copies), needs no
``reload_dataloaders_every_n_epochs``, and works under DDP (``DistributedSamplerWrapper`` forwards ``set_epoch``).
Order and captions are pure functions of ``(seed, epoch)``, and the training loader is a
:class:`~msdm.data.loader.ResumableDataLoader` (its position within the epoch is saved in Lightning's checkpoints),
so a run resumed from any checkpoint, mid-epoch included, sees the batches of an uninterrupted one. Validation and test captions are fixed (epoch 0), so validation losses compare across epochs.
"""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from msdm.data.epoch_sampler import EpochShuffleSampler
from msdm.data.loader import ResumableDataLoader
from msdm.synthetic import SyntheticGIDataset, synthetic_collate

#: Validation prompts for sample grids: diverse, all in the real MEDVQA-GI grammar and all renderable here.
DEFAULT_VALIDATION_PROMPTS: tuple[str, ...] = (
    "Generate an image containing a polyp.",
    "Generate an image with no polyps.",
    "Generate an image with 2 polyps.",
    "Generate an image with a polyp of size >20mm.",
    "Generate an image containing a green/black box artefact.",
    "Generate an image not containing text.",
    "Generate an image with 1 instrument.",
    "Generate an image from a gastroscopy procedure.",
)


class SyntheticGIDataModule(pl.LightningDataModule):
    """Synthetic colonoscopy-like scenes with MEDVQA-GI captions; train, val and test splits never share a scene.

    Args:
        num_train: training images (scene ``i`` is a pure function of ``(seed, "train", i)``).
        num_val: validation images; the test split has as many, drawn from its own stream.
        resolution: square image side in pixels.
        seed: seed of every split's scenes, of the per-epoch caption choice and of the shuffle order.
        batch_size: images per batch (all splits).
        num_workers: DataLoader worker processes; with > 0 the workers are persistent (each keeps its render cache).
        val_prompts: prompts for validation sample grids (default: :data:`DEFAULT_VALIDATION_PROMPTS`).
        caption_facts: training captions join 1..K of a scene's true captions (K = 1: one caption, the paper's
            recipe; see :func:`msdm.data.compose.compose_caption` and docs/benchmarks.md, "Prompt adherence").
            Validation and test keep one caption per scene.
    """

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 64,
        resolution: int = 64,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        val_prompts: list[str] | None = None,
        caption_facts: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.num_train = num_train
        self.num_val = num_val
        self.resolution = resolution
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._val_prompts = list(val_prompts) if val_prompts else list(DEFAULT_VALIDATION_PROMPTS)
        self.train_set: SyntheticGIDataset | None = None
        self.val_set: SyntheticGIDataset | None = None
        self.test_set: SyntheticGIDataset | None = None

    @property
    def validation_prompts(self) -> list[str]:
        """Fixed prompts for the sample grid at validation end (a copy; the same every call)."""
        return list(self._val_prompts)

    def setup(self, stage: str | None = None) -> None:
        # Cheap: scenes render lazily on first access and are cached per process.
        make = lambda n, split, k=1: SyntheticGIDataset(n, self.resolution, self.seed, split, caption_facts=k)  # noqa: E731
        if self.train_set is None:
            self.train_set = make(self.num_train, "train", self.hparams.caption_facts)
        if self.val_set is None:
            self.val_set = make(self.num_val, "val")
        if self.test_set is None:
            self.test_set = make(self.num_val, "test")

    def _loader(self, dataset, sampler=None) -> DataLoader:
        # the training loader (with a sampler) is resumable mid-epoch: its position goes into Lightning's checkpoints
        return (ResumableDataLoader if sampler is not None else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,  # training order comes from the sampler; val/test stay in index order
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=synthetic_collate,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        # Start at the trainer's epoch: on resume, Lightning creates the first iterator before it calls set_epoch.
        trainer = getattr(self, "trainer", None)
        epoch = trainer.current_epoch if trainer is not None else 0
        sampler = EpochShuffleSampler(len(self.train_set), seed=self.seed, shuffle=True, epoch=epoch)
        return self._loader(self.train_set, sampler)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            self.setup("test")
        return self._loader(self.test_set)
