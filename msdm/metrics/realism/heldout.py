"""Generated images against held-out real frames, with the real-vs-real floor beside them at the same n.

An FID on a few hundred images is biased upward by a large, n-dependent amount (Chong & Forsyth 2020), so a bare
number says little. :class:`HeldOutRealism` reports it next to the *floor*: the FID of the same number of other real
frames of the same kind (e.g. training frames) against the same held-out frames — what a perfect generator would
score at this n. ``ratio = fid / floor`` is the figure to compare across runs (issue 20: goal ≤ 2 at 64 px).

It also reports saturation: the share of colour values clipped at 255 (and at 0) of the generated images vs of the
real frames (a blown-out sample, e.g. from too strong guidance, shows as many times the real share).
"""

from __future__ import annotations

import torch

from msdm.metrics.realism.frechet import frechet_distance

__all__ = ["to_uint8", "clipped_shares", "HeldOutRealism"]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] → uint8, as they would be saved (round half up, clamped)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def clipped_shares(images: torch.Tensor) -> dict[str, float]:
    """``{"255": share of colour values at 255, "0": share at 0}`` of float images in [0, 1] (after quantisation)."""
    u8 = to_uint8(images)
    return {"255": float((u8 == 255).float().mean()), "0": float((u8 == 0).float().mean())}


class HeldOutRealism:
    """FID against ``held`` real frames with its floor: ``reference`` real frames (at least ``len(held)``, none of
    them in ``held``) drawn to the same n.

    Args:
        held: float [N, 3, H, W] in [0, 1], the held-out real frames.
        reference: float [M, 3, H, W] in [0, 1], other real frames of the same kind (M >= N).
        extractor: a feature extractor with ``extract(uint8 images, batch_size)`` (default: Inception, the FID
            network of :mod:`msdm.metrics.realism.inception`, offline).
        seed: which ``N`` of the ``reference`` frames form the floor's draw.
    """

    def __init__(self, held: torch.Tensor, reference: torch.Tensor, extractor=None, seed: int = 0,
                 batch_size: int = 50):
        if len(reference) < len(held):
            raise ValueError(f"the floor needs at least as many reference frames ({len(reference)}) as held-out "
                             f"frames ({len(held)})")
        if extractor is None:
            from msdm.metrics.realism.inception import InceptionExtractor

            extractor = InceptionExtractor()
        self.extractor, self.batch_size, self.n = extractor, int(batch_size), len(held)
        g = torch.Generator().manual_seed(int(seed))
        draw = reference[torch.randperm(len(reference), generator=g)[: self.n]]
        self.held_features = self.features(held)
        self.floor = frechet_distance(self.features(draw), self.held_features)
        self.real_clipped = clipped_shares(held)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.extractor.extract(to_uint8(images), batch_size=self.batch_size)

    def score(self, images: torch.Tensor) -> dict:
        """``{"fid", "floor", "ratio", "n", "clipped_255", "clipped_0", "real_clipped_255", "real_clipped_0"}`` of
        generated ``images`` (float [n, 3, H, W] in [0, 1]; n should be the held-out n for the floor to apply)."""
        if len(images) != self.n:
            raise ValueError(f"score {self.n} images (the held-out n) for the floor to apply, got {len(images)}")
        fid = frechet_distance(self.features(images), self.held_features)
        c = clipped_shares(images)
        return {"fid": fid, "floor": self.floor, "ratio": fid / self.floor, "n": self.n, "clipped_255": c["255"],
                "clipped_0": c["0"], "real_clipped_255": self.real_clipped["255"],
                "real_clipped_0": self.real_clipped["0"]}
