"""``FactFramesDataset``: real frames of image + mask folders with captions composed from their true facts.

Each frame's facts (:mod:`msdm.facts.table`: polyp count, size class, locations, box artefact, text) become true
MEDVQA-GI sentences (:func:`msdm.facts.captions.fact_sentences`), and each epoch a caption joins 1..K of them
(``caption_facts`` = K, :func:`msdm.facts.captions.compose_caption`), drawn from ``(seed, "fact-caption", index,
epoch)``: the same in every worker, rank and resumed run (:mod:`msdm.data.rng`). Items are the msdm batch format
(docs/CONVENTIONS.md): ``{"pixel_values" [3, H, W] in [-1, 1], "caption", "id"}``.

Flips (``flips=True``): a frame is mirrored left-right / top-bottom (p 0.5 each, keyed like the captions) only when
its facts say it shows neither the box artefact nor text (both are at fixed places no prompt describes mirrored),
and its caption then names the mirrored location cells (:meth:`msdm.facts.frames.FrameFacts.flipped`). A frame
whose box or text is unknown is never flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from msdm.data import rng
from msdm.data.transforms import to_square
from msdm.facts.captions import compose_caption, fact_sentences
from msdm.facts.frames import FrameFacts
from msdm.facts.grammar import FACT_KEYS

__all__ = ["FRAME_FACTS", "FactFramesDataset"]

#: The facts a real frame can state (``facts=`` picks a subset).
FRAME_FACTS: tuple[str, ...] = ("procedure", "text", "box", "polyp", "polyp_count", "polyp_sizes", "polyp_locations")
_S_H, _S_V = rng.salt("fact-hflip"), rng.salt("fact-vflip")


class FactFramesDataset(Dataset):
    """``frames``: ``[(id, image path, FrameFacts)]``.

    Args:
        resolution: square side of ``pixel_values`` (frames are centre-cropped, then resized).
        seed: keys every caption and flip draw.
        caption_facts: K: captions join 1..K of the frame's true sentences (1 = one sentence, the paper's recipe).
        facts: which facts captions may state (a subset of :data:`FRAME_FACTS`; ``None`` = all).
        procedure: ``"colonoscopy"`` / ``"gastroscopy"`` to state the procedure (the whole folder's), else ``None``.
        flips: mirror frames without box and text, with their location facts (module docstring).
        fixed: validation / test: the caption of epoch 0 and no flips, whatever epoch is asked.
    """

    def __init__(self, frames: Sequence[tuple[str, str | Path, FrameFacts]], resolution: int = 64, seed: int = 0,
                 caption_facts: int = 1, facts: Sequence[str] | None = None, procedure: str | None = None,
                 flips: bool = False, fixed: bool = False):
        if not frames:
            raise ValueError("FactFramesDataset needs at least one frame")
        unknown = set(facts or ()) - set(FRAME_FACTS)
        if unknown:
            raise ValueError(f"facts: {sorted(unknown)} are not facts of a real frame; choose from {FRAME_FACTS}")
        if caption_facts < 1:
            raise ValueError(f"caption_facts must be >= 1, got {caption_facts}")
        self.frames = list(frames)
        self.resolution, self.seed, self.caption_facts = int(resolution), int(seed), int(caption_facts)
        self.facts = tuple(facts) if facts else FRAME_FACTS
        self.procedure, self.flips, self.fixed = procedure, bool(flips), bool(fixed)
        self._pixels: dict[int, np.ndarray] = {}  # decoded, resized frames (uint8; 64 px: 12 KB each)
        empty = [fid for fid, _, f in self.frames if not self.sentences(f)]
        if empty:
            raise ValueError(f"{len(empty)} frame(s) have no fact to state with facts={list(self.facts)} "
                             f"(e.g. {empty[0]}); state more facts")

    def __len__(self) -> int:
        return len(self.frames)

    def sentences(self, facts: FrameFacts) -> list[str]:
        """The true sentences of one frame's facts, restricted to :attr:`facts`."""
        d = facts.to_facts()
        if self.procedure is not None:
            d["procedure"] = self.procedure
        return fact_sentences({k: v for k, v in d.items() if k in self.facts and k in FACT_KEYS})

    def flip_for(self, index: int, epoch: int) -> tuple[bool, bool]:
        """``(hflip, vflip)`` of frame ``index`` in ``epoch`` (both False unless its box and text are known absent)."""
        f = self.frames[index][2]
        if self.fixed or not self.flips or f.box is not False or f.text is not False:
            return False, False
        return (rng.uniform(self.seed, epoch, index, _S_H) < 0.5, rng.uniform(self.seed, epoch, index, _S_V) < 0.5)

    def caption(self, index: int, epoch: int = 0) -> str:
        """The caption of frame ``index`` in ``epoch`` (after its flips)."""
        epoch = 0 if self.fixed else int(epoch)
        facts = self.frames[index][2].flipped(*self.flip_for(index, epoch))
        g = rng.numpy_generator(self.seed, "fact-caption", index, epoch)
        return compose_caption(self.sentences(facts), g, self.caption_facts)

    def full_caption(self, index: int) -> str:
        """Every true sentence of frame ``index`` (unflipped), in the grammar's order: the prompt a frame answers
        in full (``caption_facts`` draws only 1..K of them)."""
        return " ".join(self.sentences(self.frames[index][2]))

    def _load(self, index: int) -> np.ndarray:
        if index not in self._pixels:
            with Image.open(self.frames[index][1]) as img:
                self._pixels[index] = np.asarray(to_square(img.convert("RGB"), self.resolution))
        return self._pixels[index]

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), 0)
        a = self._load(index)
        hflip, vflip = self.flip_for(index, 0 if self.fixed else epoch)
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        x = torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {"pixel_values": x, "caption": self.caption(index, epoch), "id": self.frames[index][0]}
