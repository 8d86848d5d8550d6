"""Counter-based (keyed) randomness: every random draw is a pure function of ``(seed, purpose, keys...)``.

Every random choice of the data layer (which prompt an image shows this epoch, whether it is flipped, where it is
cropped) is a pure function of integers such as ``(seed, epoch, sample index, salt("flip"))``; every draw of a
training step (noise, timesteps, CFG dropout, posterior samples, dropout masks) comes from a generator seeded by
``(seed, purpose, global step, micro-batch, rank)`` (:func:`generator`, :func:`seed_torch`; used by
``lightning_modules.guards.reseed_for_step``). So a draw is the same whichever DataLoader worker or DDP rank makes
it, survives a resume from any checkpoint (mid-epoch included), and changes with the epoch or step, without sharing
a generator between processes or saving RNG states. To add a random choice, give it its own ``purpose`` string and
key it on what it belongs to (sample index + epoch for data, global step for training).

The mixer is SplitMix64 (Steele et al., 2014), applied to each component in turn.
"""

from __future__ import annotations

import zlib

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def salt(name: str) -> int:
    """A stable integer for a string (crc32; Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


def mix(*parts: int) -> int:
    h = 0x5EED
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK))
    return h


def uniform(*parts: int) -> float:
    """A float in [0, 1) determined by ``parts`` (e.g. ``seed, epoch, index, salt("flip")``)."""
    return (mix(*parts) >> 11) * (1.0 / (1 << 53))


def randint(n: int, *parts: int) -> int:
    """An integer in ``[0, n)`` determined by ``parts``."""
    if n <= 0:
        raise ValueError("n must be positive")
    return min(int(uniform(*parts) * n), n - 1)


def key(seed: int, purpose: str, *parts: int) -> int:
    """A 63-bit seed for ``(seed, purpose, *parts)``: e.g. ``key(seed, "train-step", global_step, micro, rank)``."""
    return mix(seed, salt(purpose), *parts) & ((1 << 63) - 1)


def generator(seed: int, purpose: str, *parts: int, device=None):
    """A ``torch.Generator`` (on ``device``) seeded with :func:`key` — independent of any global RNG state."""
    import torch

    return torch.Generator(device=device or "cpu").manual_seed(key(seed, purpose, *parts))


def numpy_generator(seed: int, purpose: str, *parts: int):
    """A ``numpy.random.Generator`` seeded with :func:`key`."""
    import numpy as np

    return np.random.default_rng(key(seed, purpose, *parts))


def seed_torch(seed: int, purpose: str, *parts: int) -> int:
    """Seed torch's global RNGs (CPU and every CUDA device) with :func:`key`; returns the seed.

    For draws that cannot take a generator (``nn.Dropout``, ``DiagonalGaussianDistribution.sample()``): seeding at
    the start of every training step makes them a function of the step, not of what ran before.
    """
    import torch

    s = key(seed, purpose, *parts)
    torch.manual_seed(s)
    return s
