"""The utility experiment on the embedded synthetic scenes, where every label is known (msdm.synthetic).

* :func:`write_synthetic_task` writes a small labelled "real" task as class folders (``train/<class>/``,
  ``test/<class>/``) plus its class-prompt file: scenes drawn from the default :class:`SceneDistribution`, labelled
  from the attributes they were rendered from (e.g. polyp present vs absent).
* the render generators (a prompt-following and a prompt-contradicting one: ``msdm utility --generator
  render:follow`` / ``render:contradict``) are :class:`msdm.generators.render.RenderGenerator` over
  :mod:`msdm.synthetic.prompt_render`; their names stay importable from here.

Renders follow the challenge layout and the seed rule of ``msdm generate`` (image ``k`` of the prompt-major list
is drawn from seed ``seed + k``) and carry the same provenance records.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from msdm.io import write_json
from msdm.synthetic.prompt_render import RENDER_MODES, distribution_for, prompt_facts, render_for_prompt  # noqa: F401
from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import sample_attributes
from msdm.utility.class_prompts import parse_label_set

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


def render_generator_info(mode: str, resolution: int) -> dict:
    """Deprecated: :meth:`msdm.generators.render.RenderGenerator.info`."""
    from msdm.generators.render import RenderGenerator

    return RenderGenerator(mode, resolution).info()


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
