"""``UtilityDataModule``: the training set of one utility run (real subset + synthetic images), the real
validation split carved from the real training data, and the real test set.

Built by ``msdm utility`` for each run from already decoded sources (:class:`msdm.utility.data.LabelledImages`, so
thousands of runs share one decoding) and the run's indices (:func:`msdm.utility.plan.run_indices`). Early stopping
monitors the validation split, which holds only real images of the run's own subset; the test set is used once,
after training.

The training order comes from :class:`~msdm.data.epoch_sampler.EpochShuffleSampler` (a pure function of seed and
epoch; Lightning wraps it in a ``DistributedSamplerWrapper`` under DDP and forwards ``set_epoch``).
"""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from msdm.data.epoch_sampler import EpochShuffleSampler
from msdm.utility.data import LabelledImages
from msdm.utility.mixing import MixedDataset


class UtilityDataModule(pl.LightningDataModule):
    """Args:
        real: the real training set (all of it; ``real_train`` / ``real_val`` pick the run's rows).
        test: the real test set.
        synthetic: the generator's pool (``None`` for the real-only arm).
        real_train, real_val, synthetic_indices: rows of ``real`` and ``synthetic`` (see ``run_indices``).
        batch_size, num_workers: DataLoader settings.
        seed: training order and flips.
        hflip: random horizontal flips of training images.
    """

    def __init__(self, real: LabelledImages, test: LabelledImages, real_train: list[int], real_val: list[int],
                 synthetic: LabelledImages | None = None, synthetic_indices: list[int] | None = None,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0, hflip: bool = False):
        super().__init__()
        if not real_val:
            raise ValueError("the real validation split is empty: early stopping needs real validation images (raise "
                             "the real fraction or the class counts)")
        parts = [(real, real_train)]
        if synthetic is not None and synthetic_indices:
            parts.append((synthetic, synthetic_indices))
        self.train_set = MixedDataset(parts, hflip=hflip, seed=seed)
        if len(self.train_set) == 0:
            raise ValueError("the run has no training images")
        self.val_set = MixedDataset([(real, real_val)])
        self.test_set = MixedDataset([(test, list(range(len(test))))])
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)

    def _loader(self, ds, sampler=None):
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set, EpochShuffleSampler(len(self.train_set), self.seed, shuffle=True))

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        return self._loader(self.test_set)
