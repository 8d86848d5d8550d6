"""The synthetic-scene Dataset: procedural colonoscopy-like scenes with MEDVQA-GI captions from their true attributes.

The embedded default dataset of msdm (foundation issue, "Data for now"): it needs no download, it is deterministic
by seed, and because every caption is computed from the attributes the scene was rendered from, prompt adherence
of a generator trained on it can be checked against ground truth (:mod:`msdm.synthetic.pixel_detectors`,
:mod:`msdm.metrics.adherence`).

What a scene holds (all sampled by :func:`sample_attributes`, drawn by :func:`render_scene`):

* mucosa: pink-orange colour field (colours measured on the Kvasir-SEG sample in ``../shared/data``: median RGB of
  mucosa ~ (168, 90, 63), polyps ~ (217, 118, 83)), haustral folds (colonoscopy: rings around the lumen;
  gastroscopy: radial rugae, pinker palette), a dark lumen in or off the centre, light falling off with depth,
  wet specular speckles;
* 0-3 polyps: lit domes (Paris Is), flat plateaus (IIa) or heads on a stalk (Ip), of the four MEDVQA size classes,
  placed in one of the nine MEDVQA location cells, slightly redder or paler than the mucosa;
* 0-2 instruments entering from an edge: tube, biopsy forceps (blue sheath, metal jaws), polyp snare (sheath and
  wire loop);
* the black octagonal frame of the endoscope image, and optionally the lower-left green/black box (the ScopeGuide
  inset of HyperKvasir images) and white on-screen-display text at the top left.

The parts, one concept per file, are listed in :mod:`msdm.synthetic` (which re-exports their public names); this
module holds the Dataset. Everything is numpy + PIL (+ torch for the Dataset); no Lightning.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from msdm.data.compose import compose_caption
from msdm.synthetic.captions import captions_for, scene_locations
from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import SceneDistribution, sample_attributes

# =====================================================================================================================
# Dataset
# =====================================================================================================================

_SPLITS = {"train": 0, "val": 1, "test": 2}


class SyntheticGIDataset(Dataset):
    """``num_samples`` synthetic scenes; sample ``i`` of a split is a pure function of ``(seed, split, i)``.

    Items are ``{"pixel_values": float [3, H, W] in [-1, 1], "caption": str, "id": str, "attributes": dict}``.
    The caption is one of the scene's true captions (or, with ``caption_facts`` = K > 1, 1..K of them joined:
    :func:`msdm.data.compose.compose_caption`), chosen by ``(seed, split, i, epoch)``: ``dataset[i]`` uses the
    epoch set with :meth:`set_epoch`, ``dataset[(i, epoch)]`` an explicit one (what
    :class:`msdm.data.epoch_sampler.EpochShuffleSampler` yields, which also works with worker processes). Use
    :func:`synthetic_collate` as ``collate_fn`` so the nested attribute dicts stay a list.
    """

    def __init__(
        self,
        num_samples: int = 512,
        resolution: int = 64,
        seed: int = 0,
        split: str = "train",
        cache: bool = True,
        distribution: SceneDistribution | None = None,
        caption_facts: int = 1,
    ):
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.num_samples = int(num_samples)
        self.resolution = int(resolution)
        self.seed = int(seed)
        self.split = split
        self.cache = cache  # keep rendered scenes (uint8) in memory: ~12 KB per 64 px image
        self.distribution = distribution or SceneDistribution()
        self.caption_facts = int(caption_facts)  # :func:`msdm.data.compose.compose_caption`; 1 = one fact (paper)
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, list[str], dict]] = {}

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Choose captions for ``epoch`` in later ``dataset[i]`` calls (this process only; see the class doc)."""
        self.epoch = int(epoch)

    def sample_id(self, index: int) -> str:
        return f"synthetic-{self.split}-s{self.seed}-{index:06d}"

    def _rng(self, index: int, *stream: int) -> np.random.Generator:
        # Independent streams per (seed, split, index[, purpose, epoch]): splits can never share a scene.
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_SPLITS[self.split], index, *stream)))

    def scene(self, index: int) -> tuple[np.ndarray, list[str], dict]:
        """(uint8 image [H, W, 3], all true captions, attributes dict) of sample ``index``, rendered or cached."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        if index in self._cache:
            return self._cache[index]
        rng = self._rng(index, 0)
        attrs = sample_attributes(rng, self.distribution)
        image, _ = render_scene(attrs, self.resolution, rng)
        locations = scene_locations(attrs)
        info = attrs.to_dict()
        info.update({f"{k}_locations": v for k, v in locations.items()})
        entry = (np.asarray(image), captions_for(attrs, locations), info)
        if self.cache:
            self._cache[index] = entry
        return entry

    def caption(self, index: int, epoch: int | None = None) -> str:
        """The caption of sample ``index`` in ``epoch`` (default: the epoch set with :meth:`set_epoch`)."""
        return self._choose(index, self.scene(index)[1], self.epoch if epoch is None else int(epoch))

    def _choose(self, index: int, captions: list[str], epoch: int) -> str:
        return compose_caption(captions, self._rng(index, 1, epoch), self.caption_facts)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), self.epoch)
        pixels, captions, info = self.scene(index)
        x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {
            "pixel_values": x,
            "caption": self._choose(index, captions, epoch),
            "id": self.sample_id(index),
            "attributes": info,
        }


def synthetic_collate(items: list[dict]) -> dict:
    """Default collation, except ``attributes`` stays a list of per-sample dicts (they nest variable-length lists)."""
    attributes = [it["attributes"] for it in items]
    batch = default_collate([{k: v for k, v in it.items() if k != "attributes"} for it in items])
    batch["attributes"] = attributes
    return batch


__all__ = ["SyntheticGIDataset", "synthetic_collate"]
