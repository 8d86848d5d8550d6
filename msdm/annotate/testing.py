"""Study inputs for tests and the walk-through in docs/expert-evaluation.md, from real images and no model.

:func:`write_study_inputs` writes what ``msdm annotate build`` takes — one folder per "model" in the challenge
layout with a ``prompts.json`` (as ``msdm generate`` writes), a real-image folder and a real mapping — where each
"model" is a known degradation of real images, so its quality is *planted*: ``sharp`` (real images, other than
the references, lightly jittered) > ``blurry`` (Gaussian blur) > ``noisy`` (blur, colour cast and heavy noise).
:func:`simulate_ratings` then fills a ratings database with raters who prefer exactly that order, with noise.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from msdm.prompts import challenge_filename

PROMPT_PAIRS = [
    ("Generate an image containing a polyp.", "Create an endoscopic image showing one polyp."),
    ("Generate an image with no polyps.", "Produce a colonoscopy image in which no polyp is visible."),
    ("Generate a polyp of size 11-20mm.", "Show a colon polyp measuring between 11 and 20 millimetres."),
    ("Generate an image containing a green/black box artefact.", "Create an image with the green and black box overlay."),
    ("Generate a polyp of type paris is.", "Show a sessile (Paris Is) polyp in the colon."),
    ("Generate an image with a text overlay.", "Produce an endoscopy frame that has text burned into it."),
    ("Generate an image containing an instrument.", "Show a colonoscopy image with a biopsy instrument."),
    ("Generate a pink polyp in the center.", "Create an image of a pinkish polyp in the middle of the view."),
]
QUALITY = {"sharp": 0, "blurry": 1, "noisy": 2}  # planted order, 0 = best


def _degrade(img: Image.Image, model: str, rng: np.random.Generator) -> Image.Image:
    if model == "sharp":
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, 2, (img.height, img.width, 3))
    elif model == "blurry":
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(radius=img.width / 40))).astype(np.float32)
    elif model == "noisy":
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(radius=img.width / 25))).astype(np.float32)
        arr = 0.5 * arr + np.array([30, 90, 10]) + rng.normal(0, 40, arr.shape)
    else:
        raise ValueError(model)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_study_inputs(root: str | os.PathLike, real_source: str | os.PathLike, num_pairs: int = 2,
                       num_images: int = 10, num_real: int = 10, size: int = 64, seed: int = 0,
                       models: tuple[str, ...] = ("sharp", "blurry", "noisy")) -> dict:
    """Write ``root/{model}/prompt0001_img0001.png…``, ``root/real/``, ``root/prompts.json``,
    ``root/real_mapping.json``; return their paths. Real references and model sources are disjoint images."""
    root = Path(root)
    files = sorted(p for p in Path(real_source).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    n_ref = num_pairs * num_real
    if len(files) < n_ref + num_images:
        raise ValueError(f"{real_source} has {len(files)} images, need at least {n_ref + num_images}")
    ref_files, src_files = files[:n_ref], files[n_ref:]
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)

    def load(p: Path) -> Image.Image:
        with Image.open(p) as im:
            return im.convert("RGB").resize((size, size), Image.BICUBIC)

    (root / "real").mkdir(parents=True, exist_ok=True)
    mapping = {}
    for p in ref_files:
        load(p).save(root / "real" / f"{p.stem}.png")
    for k in range(num_pairs):
        mapping[str(2 * k + 1)] = [p.stem for p in ref_files[k * num_real:(k + 1) * num_real]]
    prompts = [s for pair in (PROMPT_PAIRS * (num_pairs // len(PROMPT_PAIRS) + 1))[:num_pairs] for s in pair]
    sources = [load(p) for p in src_files]
    out = {"real": root / "real", "models": {}}
    for m in models:
        folder = root / m
        folder.mkdir(parents=True, exist_ok=True)
        for p in range(len(prompts)):
            for i in range(num_images):
                img = sources[pick.randrange(len(sources))]
                _degrade(img, m, rng).save(folder / challenge_filename(p + 1, i + 1))
        (folder / "prompts.json").write_text(json.dumps({str(k + 1): s for k, s in enumerate(prompts)}, indent=2))
        out["models"][m] = folder
    (root / "prompts.json").write_text(json.dumps(prompts, indent=2))
    (root / "real_mapping.json").write_text(json.dumps(mapping, indent=2))
    out["prompts"] = root / "prompts.json"
    out["real_mapping"] = root / "real_mapping.json"
    return out


def simulate_ratings(store, key: dict, raters=("r1", "r2", "r3"), noise: float = 1.0, seed: int = 0,
                     quality: dict | None = None) -> None:
    """Fill ``store`` (a :class:`~msdm.annotate.store.RatingStore`) with raters whose scores and ranks follow
    ``quality`` (model → 0 best, 1, …; default :data:`QUALITY`): score = 9 − 3·quality + noise, real images ranked
    first, models after them in quality order (two adjacent models swap now and then)."""
    from msdm.annotate.store import GLOBAL_RANK, RANK
    from msdm.annotate.study import ASPECT_IDS, GLOBAL, REAL

    quality = quality or QUALITY
    rng = np.random.default_rng(seed)
    for r in raters:
        store.add_rater(r)
        for pr in key["prompts"]:
            k, letters = pr["index"], pr["letters"]
            for letter, model in letters.items():
                for a in ASPECT_IDS:
                    v = int(np.clip(round(9 - 3 * quality[model] + rng.normal(0, noise)), 0, 10))
                    store.save(r, k, letter, a, v)
            noisy_q = {letter: quality[m] + rng.normal(0, noise / 3) for letter, m in letters.items()}
            order = sorted(noisy_q, key=noisy_q.get)
            store.save(r, k, REAL, RANK, 1)
            for rank, letter in enumerate(order, start=2):
                store.save(r, k, letter, RANK, rank)
        glet = key["global"]["letters"]
        for rank, letter in enumerate(sorted(glet, key=lambda letter: quality[glet[letter]]), start=1):
            store.save(r, GLOBAL, letter, GLOBAL_RANK, rank)
