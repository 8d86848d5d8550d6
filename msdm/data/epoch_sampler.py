"""A shuffling sampler that tells the dataset which epoch it is: it yields ``(index, epoch)`` pairs.

Why a sampler and not ``dataset.set_epoch(e)``: with ``num_workers > 0`` (and ``persistent_workers=True``) every
worker process holds its own *copy* of the dataset, made when the workers start, so an epoch set on the main
process's dataset never reaches them. The sampler, by contrast, runs in the main process and its indices are sent to
the workers with every batch; putting the epoch into the index is the one channel that always works.

Lightning calls ``set_epoch`` on a DataLoader's sampler at the start of each training epoch (also through
``DistributedSamplerWrapper`` under DDP, which forwards it), exactly as it does for ``DistributedSampler``. The order
is a pure function of ``(seed, epoch)``, independent of global RNG state, so a run resumed at an epoch boundary sees
the same order and the same per-epoch choices (e.g. captions) as an uninterrupted run.

A dataset used with this sampler must accept ``dataset[(index, epoch)]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler):
    """Yields ``(index, epoch)`` for ``index`` in a permutation of ``range(num_samples)`` seeded by ``(seed, epoch)``."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True, epoch: int = 0):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = int(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning (or by hand) before each epoch's iterator is created."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        epoch = self.epoch  # read once: the whole epoch uses the value set before iteration began
        return iter([(int(i), epoch) for i in order])

    def __len__(self) -> int:
        return self.num_samples
