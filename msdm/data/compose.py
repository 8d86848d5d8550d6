"""Training captions that state several true facts at once (an option; the paper trains on one fact per step).

MEDVQA-GI describes each image by ~10 one-fact prompts ("Generate an image containing text.", "... with 1 polyp.",
...), one table row each, and the reference trains on one of them per image per step. Each fact then reaches the
U-Net in ~1/10 of the steps an image is seen, and a step's caption explains little of the image: the model learns
the unconditional distribution long before it learns what any one sentence changes (issue 10: after 800 CPU steps
the prompt moved the ε-prediction by 0.2–1.6 %). Joining several of an image's *true* prompts into one caption
raises each fact's share of steps several-fold without a single false word, and keeping single-fact captions in
the mix (k = 1 with probability 1/K) keeps the one-sentence prompts users type in distribution.
docs/benchmarks.md ("Prompt adherence") has the measured effect.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def compose_caption(captions: Sequence[str], rng: np.random.Generator, max_facts: int = 1) -> str:
    """One training caption from an image's true ``captions``.

    ``max_facts = 1``: one caption uniformly (the paper's recipe, each real table row is one fact). ``max_facts = K``
    > 1: ``k`` uniform in ``1..min(K, len(captions))`` distinct captions in random order, joined by spaces
    ("Generate an image containing text. Generate an image with 1 polyp."). Deterministic given ``rng``.
    """
    if not captions:
        raise ValueError("compose_caption needs at least one caption")
    if max_facts < 1:
        raise ValueError(f"max_facts must be >= 1, got {max_facts}")
    n = len(captions)
    if max_facts == 1 or n == 1:
        return captions[int(rng.integers(n))]
    k = int(rng.integers(1, min(max_facts, n) + 1))
    picked = rng.choice(n, size=k, replace=False)  # already in random order
    return " ".join(captions[int(i)].strip() for i in picked)
