"""A sampler that tells the dataset the epoch, in any worker process and on any rank.

It yields ``epoch * len(dataset) + i`` instead of ``i``; :class:`~msdm.data.dataset.ImageTextDataset` splits the
number back into ``(epoch, i)``. No state is shared between processes, so this works with ``num_workers > 0``,
``persistent_workers=True`` (whose dataset copies never see attribute changes made in the main process) and DDP:
Lightning wraps a custom sampler in ``DistributedSamplerWrapper``, which forwards ``set_epoch`` and shards the
indices this sampler yields.

Lightning calls :meth:`set_epoch` before every training epoch. A plain training loop may call it too; if it does not,
each new iteration advances the epoch by one.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0):
        self.num_samples, self.shuffle, self.seed = int(num_samples), bool(shuffle), int(seed)
        self.epoch = 0
        self._epoch_given = True  # the first iteration is epoch 0 unless set_epoch says otherwise

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_given = True

    def __iter__(self):
        if not self._epoch_given:
            self.epoch += 1
        self._epoch_given = False
        n, base = self.num_samples, self.epoch * self.num_samples
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = range(n)
        return iter([base + i for i in order])

    def __len__(self) -> int:
        return self.num_samples
