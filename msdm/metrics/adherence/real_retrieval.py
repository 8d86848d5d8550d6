"""Perfect answers to prompts on real data: real frames whose true facts satisfy each prompt.

The ceiling of real-frame adherence (and a check of the detector): a "generator" that, for a prompt and a seed,
returns a real frame (from a facts table, :mod:`msdm.facts.table`) whose facts satisfy everything the prompt states
(:func:`~msdm.metrics.adherence.metric.judge` on the frame's true facts), chosen by the seed. Paired mode on it
measures what the detector sees of true answers (the gaps a perfect generator would get);
:func:`ignoring_generate_fn` returns the seed's frame whatever the prompt (a gap of exactly 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from msdm.facts.frames import FrameFacts
from msdm.facts.grammar import FACT_KEYS, parse_prompt
from msdm.metrics.adherence.metric import judge
from msdm.metrics.adherence.real_detector import load_frames

__all__ = ["frames_satisfying", "retrieval_generate_fn", "ignoring_generate_fn"]


def _true_facts(f: FrameFacts) -> dict:
    d = {"box": f.box, "text": f.text, "polyp": f.polyp_count > 0, "polyp_count": f.polyp_count,
         "polyp_sizes": f.polyp_sizes, "polyp_locations": f.polyp_locations}
    return {k: v for k, v in d.items() if v is not None}


def frames_satisfying(prompt: str, frames: Sequence[tuple[str, object, FrameFacts]]) -> list[int]:
    """Indices of the frames whose true facts satisfy every fact ``prompt`` states that a frame's facts know.

    A stated location is satisfied by a frame whose polyps cover that cell (the prompt names one of its cells); a
    stated size by a frame whose largest polyp has it. Other facts must match exactly."""
    want = parse_prompt(prompt)
    out = []
    for i, (_, _, f) in enumerate(frames):
        have = _true_facts(f)
        relaxed = dict(want)
        if want.get("polyp_locations") and set(want["polyp_locations"]) <= set(f.polyp_locations):
            relaxed["polyp_locations"] = None
        if want.get("polyp_sizes") and f.polyp_sizes and want["polyp_sizes"] == (f.polyp_sizes[-1],):
            relaxed["polyp_sizes"] = None
        stated = {k for k in FACT_KEYS if relaxed.get(k) is not None}
        if stated <= set(have) and all(judge(relaxed, have).values()):  # a fact the frame does not know: not met
            out.append(i)
    return out


def retrieval_generate_fn(frames: Sequence[tuple[str, object, FrameFacts]], resolution: int = 64):
    """``generate_fn(prompts, seeds)``: for each prompt, the frame ``seed % k`` of the ``k`` frames satisfying it
    (:func:`frames_satisfying`), as float [3, r, r] in [0, 1]. Raises ValueError for a prompt no frame satisfies."""
    cache: dict[str, list[int]] = {}
    pixels = load_frames(frames, resolution)

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        out = []
        for p, s in zip(prompts, seeds):
            if p not in cache:
                cache[p] = frames_satisfying(p, frames)
                if not cache[p]:
                    raise ValueError(f"no frame satisfies {p!r}")
            idx = cache[p]
            out.append(pixels[idx[int(s) % len(idx)]])
        return torch.stack(out)

    return generate


def ignoring_generate_fn(frames: Sequence[tuple[str, object, FrameFacts]], resolution: int = 64):
    """``generate_fn`` that returns frame ``seed % N`` whatever the prompt: paired gaps are exactly 0."""
    pixels = load_frames(frames, resolution)

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        return torch.stack([pixels[int(s) % len(pixels)] for s in seeds])

    return generate
