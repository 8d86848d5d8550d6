"""Perfect answers to prompts: synthetic scenes drawn with exactly the facts a prompt asks for.

The ceiling of every adherence measurement (``bench/adherence.py --renders``, the tests): a "generator" that renders
a scene satisfying each prompt scores what the detectors can see, no more. :func:`scene_for` draws attributes from a
:class:`~msdm.synthetic.scene.SceneDistribution` narrowed to the prompt's facts and rejects draws until every fact holds
(locations, Paris types and colours are only reachable by rejection); :func:`renders_generate_fn` is a
``generate_fn`` for :func:`msdm.metrics.adherence.paired_adherence`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from msdm.synthetic.captions import scene_locations
from msdm.synthetic.prompt_facts import FACT_KEYS, parse_prompt
from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import INSTRUMENTS, PARIS_TYPES, POLYP_SIZES, POLYP_TONES, SceneAttributes, SceneDistribution
from msdm.synthetic.scene import sample_attributes as _sample

__all__ = ["scene_facts", "scene_for", "renders_generate_fn", "ignoring_generate_fn"]


def scene_facts(attrs: SceneAttributes, locations: Mapping | None = None) -> dict:
    """The facts a scene has, with the keys and value types of :func:`~msdm.synthetic.prompt_facts.parse_prompt`."""
    locations = locations if locations is not None else scene_locations(attrs)
    colors = {c for p in attrs.polyps for c in POLYP_TONES[p.tone]}
    return {
        "procedure": attrs.procedure,
        "text": attrs.has_text,
        "box": attrs.box_artefact,
        "instrument": bool(attrs.instruments),
        "instrument_count": len(attrs.instruments),
        "instrument_kinds": tuple(k for k in INSTRUMENTS if any(i.kind == k for i in attrs.instruments)),
        "instrument_locations": tuple(locations["instrument"]),
        "polyp": bool(attrs.polyps),
        "polyp_count": len(attrs.polyps),
        "polyp_sizes": tuple(s for s in POLYP_SIZES if any(p.size == s for p in attrs.polyps)),
        "polyp_paris": tuple(t for t in PARIS_TYPES if any(p.paris == t for p in attrs.polyps)),
        "polyp_colors": tuple(c for c in ("pink", "red") if c in colors),
        "polyp_locations": tuple(locations["abnormality"]),
    }


def _one_hot(n: int, i: int) -> tuple[float, ...]:
    return tuple(1.0 if j == i else 0.0 for j in range(n))


def _narrowed(facts: Mapping, base: SceneDistribution) -> SceneDistribution:
    """``base`` with the probabilities the facts pin down set to 0 / 1 (the rest is left to rejection)."""
    d = dataclasses.replace(base)
    if facts.get("procedure") is not None:
        d.p_gastroscopy = float(facts["procedure"] == "gastroscopy")
    if facts.get("box") is not None:
        d.p_box = float(facts["box"])
    if facts.get("text") is not None:
        d.p_text = float(facts["text"])
    n_max = len(d.polyp_count_weights) - 1
    sizes = facts.get("polyp_sizes")
    if facts.get("polyp_count") is not None:
        d.polyp_count_weights = _one_hot(n_max + 1, min(int(facts["polyp_count"]), n_max))
    elif facts.get("polyp") is False:
        d.polyp_count_weights = _one_hot(n_max + 1, 0)
    elif facts.get("polyp") or sizes:
        least = max(1, len(sizes or ()))
        d.polyp_count_weights = tuple(w if i >= least else 0.0 for i, w in enumerate(base.polyp_count_weights))
    if sizes:
        d.size_weights = tuple(1.0 if s in sizes else 0.0 for s in POLYP_SIZES)
    kinds = facts.get("instrument_kinds")
    if facts.get("instrument_count") is not None:
        d.instrument_count_weights = _one_hot(len(d.instrument_count_weights), int(facts["instrument_count"]))
    elif facts.get("instrument") is False:
        d.instrument_count_weights = _one_hot(len(d.instrument_count_weights), 0)
    elif kinds:
        d.instrument_count_weights = _one_hot(len(d.instrument_count_weights), len(kinds))
    elif facts.get("instrument"):
        d.instrument_count_weights = (0.0, *base.instrument_count_weights[1:])
    if kinds and len(kinds) == 1 and kinds[0] in INSTRUMENTS:
        d.instrument_weights = tuple(1.0 if k == kinds[0] else 0.0 for k in INSTRUMENTS)
    return d


def scene_for(prompt: str | Mapping, rng: np.random.Generator, base: SceneDistribution | None = None,
              max_tries: int = 2000) -> SceneAttributes:
    """Scene attributes with every fact ``prompt`` (a string or a :func:`parse_prompt` dict) asks for.

    Raises ``ValueError`` for a prompt with unparsed sentences or facts no scene can have, and when ``max_tries``
    draws satisfy no scene (e.g. contradictory locations)."""
    facts = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    if facts.get("unparsed"):
        raise ValueError(f"cannot draw a scene for a prompt with sentences the parser does not know: {facts['unparsed']}")
    wanted = {k: facts[k] for k in FACT_KEYS if facts.get(k) is not None}
    if wanted.get("polyp_count", 0) > 3 or wanted.get("instrument_count", 0) > 2:
        raise ValueError(f"the scenes draw at most 3 polyps and 2 instruments, the prompt asks {wanted}")
    if not set(wanted.get("instrument_kinds", ())) <= set(INSTRUMENTS):
        raise ValueError(f"the scenes draw only {INSTRUMENTS}, the prompt asks {wanted['instrument_kinds']}")
    dist = _narrowed(wanted, base or SceneDistribution())
    for _ in range(max_tries):
        attrs = _sample(rng, dist)
        have = scene_facts(attrs)
        if all(have[k] == v for k, v in wanted.items()):
            return attrs
    raise ValueError(f"no scene satisfying {wanted} in {max_tries} draws")


def render_prompt_scene(prompt: str | Mapping, seed: int, resolution: int = 64,
                        base: SceneDistribution | None = None) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a scene with the prompt's facts, drawn from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(int(seed))
    attrs = scene_for(prompt, rng, base)
    img, _ = render_scene(attrs, resolution, rng)
    return np.array(img)


def render_ignoring_prompt(seed: int, resolution: int = 64) -> np.ndarray:
    """uint8 ``[H, W, 3]``: a scene that is a pure function of the seed (the prompt plays no part)."""
    rng = np.random.default_rng(int(seed))
    img, _ = render_scene(_sample(rng), resolution, rng)
    return np.array(img)


def _to_float(arrays) -> torch.Tensor:
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays])


def renders_generate_fn(resolution: int = 64, base: SceneDistribution | None = None):
    """``generate_fn(prompts, seeds)`` that renders, for each prompt, a scene with its facts drawn from
    ``np.random.default_rng(seed)``: the perfect generator (same seed, same texture; the facts differ). The same as
    ``msdm.generators.RenderGenerator("scenes").generate``."""

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        return _to_float([render_prompt_scene(p, s, resolution, base) for p, s in zip(prompts, seeds)])

    return generate


def ignoring_generate_fn(resolution: int = 64):
    """``generate_fn`` that ignores the prompt: the image is a pure function of the seed (a generator whose text
    pathway is cut). Paired mode must give a gap of exactly 0 for it. (``RenderGenerator("ignore")``.)"""

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        return _to_float([render_ignoring_prompt(s, resolution) for s in seeds])

    return generate
