"""Counter-based randomness: a uniform number from ``(seed, epoch, index, salt)`` with no RNG state.

Every random choice of the data layer (which prompt an image shows this epoch, whether it is flipped, where it is
cropped) is a pure function of these integers. So the choice is the same whichever DataLoader worker or DDP rank
loads the sample, survives a resume from a checkpoint, and changes with the epoch, without sharing a generator
between processes. The mixer is SplitMix64 (Steele et al., 2014), applied to each component in turn.
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
