"""The utility experiment on the embedded synthetic scenes, where every label is known (msdm.data.synthetic).

* :func:`write_synthetic_task` writes a small labelled "real" task as class folders (``train/<class>/``,
  ``test/<class>/``) plus its class-prompt file: scenes drawn from the default :class:`SceneDistribution`, labelled
  from the attributes they were rendered from (e.g. polyp present vs absent).
* :func:`render_for_prompt` is a generator with known adherence: it reads the facts a prompt states ("containing a
  polyp", "with no polyps", "with 1 instrument", box, text) and renders a scene drawn with them (``mode="follow"``:
  a *perfect* generator, the ceiling of what synthetic images can add), or with every fact negated
  (``mode="contradict"``: images that contradict their prompts, which must show up as harm). Use it as
  ``msdm utility --generator render:follow`` or ``render:contradict``.

Renders follow the challenge layout and the seed rule of ``msdm generate`` (image ``k`` of the prompt-major list
is drawn from seed ``seed + k``) and carry the same provenance records.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from msdm.data.synthetic import SceneDistribution, render_scene, sample_attributes
from msdm.facts.grammar import parse_prompt
from msdm.io import write_json
from msdm.utility.class_prompts import parse_label_set

RENDER_MODES = ("follow", "contradict")

#: Tasks: class name → (predicate on the attributes, prompts). Multi-label tasks list labels instead of classes.
TASKS = {
    "polyp": {
        "multilabel": False,
        "classes": {"polyp": lambda a: len(a.polyps) > 0, "no polyp": lambda a: len(a.polyps) == 0},
        "prompts": {"polyp": ["Generate an image containing a polyp."],
                    "no polyp": ["Generate an image with no polyps."]},
    },
    "polyp+instrument": {
        "multilabel": True,
        "classes": {"polyp": lambda a: len(a.polyps) > 0, "instrument": lambda a: len(a.instruments) > 0},
        "prompts": {"polyp+instrument": ["Generate an image with 1 polyp and 1 instrument."],
                    "polyp": ["Generate an image with 1 polyp and no instruments."],
                    "instrument": ["Generate an image with no polyps and 1 instrument."],
                    "none": ["Generate an image with no polyps and no instruments."]},
    },
}


# ----------------------------------------------------------------------------------------------------------------
# Prompt → scene facts
# ----------------------------------------------------------------------------------------------------------------


def prompt_facts(prompt: str) -> dict[str, bool]:
    """The facts a prompt states: ``polyp``/``instrument`` (present or not), ``box``, ``text``.

    Read by msdm's one prompt grammar (:func:`msdm.facts.grammar.parse_prompt`). Raises ``ValueError`` for a prompt
    that states none of them (the render generator cannot honour it).
    """
    parsed = parse_prompt(prompt)
    facts = {k: bool(parsed[k]) for k in ("polyp", "instrument", "box", "text") if parsed[k] is not None}
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


def render_generator_info(mode: str, resolution: int) -> dict:
    return {"model": f"render:{mode}", "revision": "msdm.data.synthetic", "sampler": "render_scene", "steps": 0,
            "guidance_scale": None, "resolution": int(resolution),
            "note": ("scenes drawn with the facts the prompt states" if mode == "follow"
                     else "scenes drawn with every fact the prompt states negated"),
            "seed_rule": "image k (0-based, prompt-major) uses seed + k"}


# ----------------------------------------------------------------------------------------------------------------
# The labelled "real" task
# ----------------------------------------------------------------------------------------------------------------


def _labels(task: dict, attrs) -> list[str]:
    return [c for c, pred in task["classes"].items() if pred(attrs)]


def write_synthetic_task(out: str | os.PathLike, task: str = "polyp", n_train_per_class: int = 16,
                         n_test_per_class: int = 50, resolution: int = 64, seed: int = 0) -> dict[str, Path]:
    """Write ``out/train/<class>/``, ``out/test/<class>/`` and ``out/prompts.json``; returns their paths.

    Scenes come from the default distribution (the "real" data), kept until every class (multi-label: every label
    set) has its count; the train and test streams never share a scene.
    """
    if task not in TASKS:
        raise ValueError(f"unknown synthetic task {task!r}; choose one of {sorted(TASKS)}")
    spec = TASKS[task]
    out = Path(out)
    if spec["multilabel"]:
        folders = list(spec["prompts"])  # the label sets, as folder names ("polyp+instrument", ..., "none")
    else:
        folders = list(spec["classes"])
    for split, n, stream in (("train", n_train_per_class, 0), ("test", n_test_per_class, 1)):
        counts = dict.fromkeys(folders, 0)
        k = 0
        while min(counts.values()) < n:
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, k)))
            attrs = sample_attributes(rng)
            labels = _labels(spec, attrs)
            if spec["multilabel"]:  # the folder named like the prompt key of this label set
                folder = next(f for f in folders if parse_label_set(f) == tuple(sorted(labels)))
            else:
                (folder,) = labels
            if counts[folder] < n:
                d = out / split / folder
                d.mkdir(parents=True, exist_ok=True)
                image, _ = render_scene(attrs, resolution, rng)
                image.save(d / f"{split}-{k:06d}.png")
                counts[folder] += 1
            k += 1
            if k > 200 * n * len(folders):
                raise RuntimeError(f"could not draw {n} scenes of every class of task {task!r}")
    write_json(out / "prompts.json", spec["prompts"])
    return {"train": out / "train", "test": out / "test", "prompts": out / "prompts.json"}
