"""One training set from several sources: the real subset and a generator's images, as one indexable dataset.

Items follow the batch convention (docs/CONVENTIONS.md): ``pixel_values`` float ``[3, H, W]`` in [-1, 1], ``id``;
plus ``target`` (class index, or multi-hot float vector), ``source`` ("real" or the generator's name) and ``index``
(the item's position in this dataset, so predictions gathered from several ranks can be put back in order and
the padding a ``DistributedSampler`` adds can be dropped).

Keys may be ``index`` or ``(index, epoch)`` (what :class:`~msdm.data.epoch_sampler.EpochShuffleSampler` yields).
Random horizontal flips, when on, are a pure function of ``(seed, epoch, index)``: the same under any number of
workers or ranks and on resume.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from msdm.utility.data import LabelledImages


class MixedDataset(Dataset):
    def __init__(self, parts: list[tuple[LabelledImages, list[int]]], hflip: bool = False, seed: int = 0):
        self.parts = [(src, list(map(int, idx))) for src, idx in parts if len(idx)]
        self.offsets = np.cumsum([0] + [len(idx) for _, idx in self.parts])
        self.hflip = bool(hflip)
        self.seed = int(seed)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[LabelledImages, int]:
        """(source, row in the source) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        p = int(np.searchsorted(self.offsets, index, side="right") - 1)
        src, idx = self.parts[p]
        return src, idx[index - int(self.offsets[p])]

    def __getitem__(self, key) -> dict:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        src, row = self.locate(index)
        x = src.images[row].float().div(127.5).sub(1.0)
        if self.hflip and np.random.default_rng([self.seed, epoch, index]).random() < 0.5:
            x = x.flip(-1)
        return {"pixel_values": x, "target": src.targets[row], "id": src.ids[row], "source": src.source,
                "index": index}

    def sources(self) -> dict[str, int]:
        """Items per source (what the run trained on, for the report)."""
        out: dict[str, int] = {}
        for src, idx in self.parts:
            out[src.source] = out.get(src.source, 0) + len(idx)
        return out
