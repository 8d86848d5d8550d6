"""Epoch-seeded shuffling, so that a resumed run sees exactly the order the uninterrupted run saw."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on ``(seed, epoch)``.

    Lightning calls ``set_epoch`` on a loader's sampler at the start of every epoch (as for ``DistributedSampler``,
    which replaces this sampler under DDP and has the same property). A plain ``RandomSampler`` draws from the
    global RNG instead, so its order after resuming differs from the uninterrupted run's.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n
