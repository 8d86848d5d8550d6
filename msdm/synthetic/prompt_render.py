"""Renders that follow or contradict a prompt: a generator with known adherence on the synthetic scenes.

:func:`render_for_prompt` reads the facts a prompt states ("containing a polyp", "with no polyps", "with 1
instrument", box, text) and renders a scene drawn with them (``mode="follow"``: a *perfect* generator, the ceiling
of what synthetic images can add), or with every fact negated (``mode="contradict"``: images that contradict their
prompts, which must show up as harm). :class:`msdm.generators.render.RenderGenerator` wraps it in the generator
contract (``msdm utility --generator render:follow`` / ``render:contradict``).

The prompt reading here (:func:`prompt_facts`) is the utility experiment's small grammar; the full prompt grammar is
:mod:`msdm.synthetic.prompt_facts` (issue 20 unifies them in ``msdm/facts``).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import SceneDistribution, sample_attributes

RENDER_MODES = ("follow", "contradict")


# ----------------------------------------------------------------------------------------------------------------
# Prompt → scene facts
# ----------------------------------------------------------------------------------------------------------------


def prompt_facts(prompt: str) -> dict[str, bool]:
    """The facts a prompt states: ``polyp``/``instrument`` (present or not), ``box``, ``text``.

    Raises ``ValueError`` for a prompt that states none of them (the render generator cannot honour it).
    """
    s = prompt.lower()
    facts: dict[str, bool] = {}
    if re.search(r"\bno polyps\b", s):
        facts["polyp"] = False
    elif re.search(r"\b([1-9]\d*|a|an) polyps?\b", s):
        facts["polyp"] = True
    if re.search(r"\bno instruments\b", s):
        facts["instrument"] = False
    elif re.search(r"\b([1-9]\d*|an?) instruments?\b|polyp snare|biopsy forceps|\btube\b", s):
        facts["instrument"] = True
    if "not containing a green/black box" in s:
        facts["box"] = False
    elif "green/black box" in s:
        facts["box"] = True
    if "not containing text" in s:
        facts["text"] = False
    elif "containing text" in s:
        facts["text"] = True
    if not facts:
        raise ValueError(f"the render generator cannot read a fact from {prompt!r}; it understands polyps (a polyp, "
                         f"N polyps, no polyps), instruments, the green/black box and text")
    return facts


def distribution_for(facts: dict[str, bool], base: SceneDistribution | None = None) -> SceneDistribution:
    """``base`` with the stated facts forced (other attributes keep their default frequencies)."""
    d = base or SceneDistribution()
    changes = {}
    if "polyp" in facts:
        w = list(d.polyp_count_weights)
        changes["polyp_count_weights"] = tuple([0.0] + w[1:]) if facts["polyp"] else tuple([1.0] + [0.0] * (len(w) - 1))
    if "instrument" in facts:
        w = list(d.instrument_count_weights)
        changes["instrument_count_weights"] = (tuple([0.0] + w[1:]) if facts["instrument"]
                                               else tuple([1.0] + [0.0] * (len(w) - 1)))
    if "box" in facts:
        changes["p_box"] = 1.0 if facts["box"] else 0.0
    if "text" in facts:
        changes["p_text"] = 1.0 if facts["text"] else 0.0
    return replace(d, **changes)


def render_for_prompt(prompt: str, seed: int, resolution: int = 64, mode: str = "follow") -> np.ndarray:
    """uint8 ``[H, W, 3]``: a scene with the prompt's facts (``follow``) or their negation (``contradict``)."""
    if mode not in RENDER_MODES:
        raise ValueError(f"render mode must be one of {RENDER_MODES}, got {mode!r}")
    facts = prompt_facts(prompt)
    if mode == "contradict":
        facts = {k: not v for k, v in facts.items()}
    rng = np.random.default_rng(seed)
    attrs = sample_attributes(rng, distribution_for(facts))
    image, _ = render_scene(attrs, resolution, rng)
    return np.array(image)  # writable: torch.from_numpy warns on read-only arrays
