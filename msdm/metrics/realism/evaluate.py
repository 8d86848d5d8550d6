"""Scoring a folder of generated images in the MEDVQA-GI layout (what ``msdm evaluate`` runs).

Inputs as the challenge script (``submission_task2.py``) has them:

* ``generated/``: ``prompt{p:04d}_img{i:04d}.png`` (p, i 1-based). As in the script, every ``.png`` counts, files
  are sorted by name, and the prompt number is ``int(name.split("_")[0].replace("prompt", ""))``;
* a prompts JSON ``{qa_key: {pair_key: [prompt_A, prompt_B]}}``, flattened in order (optional here: it only checks
  that the folder holds ``len(prompts) × images-per-prompt`` files, as the script asserts, and names prompts);
* a real-mapping JSON ``{str(prompt number): [real image id, ...]}``;
* real images: a folder (id = file stem, or the file name) or a Hugging Face dataset (``img_id`` + ``image`` columns,
  first occurrence of each id, as the script's ``seen``-filter does).

Real features are cached on disk (:class:`msdm.metrics.realism.cache.FeatureCache`) when a cache folder is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from msdm.errors import InputError, PathNotFoundError
from msdm.metrics.realism.cache import FeatureCache, dataset_fingerprint, folder_fingerprint
from msdm.metrics.realism.challenge import challenge_scores, per_prompt_metrics, real_features_by_prompt, round_scores
from msdm.metrics.realism.features import FeatureExtractor, list_images, load_image
from msdm.metrics.realism.figures import format_figures, realism_figures
from msdm.metrics.realism.frechet import frechet_distance

__all__ = [
    "parse_generated_folder",
    "load_prompts",
    "load_real_mapping",
    "RealImageFolder",
    "RealImageDataset",
    "real_features",
    "evaluate_generated",
    "format_table",
]


def parse_generated_folder(folder: str | os.PathLike, plain_ok: bool = False) -> dict[int, list[Path]]:
    """``{prompt number: [image paths]}`` exactly as the script groups them (sorted names, all ``.png`` files).

    ``plain_ok`` (FID alone needs no prompts): a folder with no image in the challenge layout is one group ``{0:
    every image file}`` (png, jpg, ...), so ``msdm evaluate --fid-only`` compares any two folders of images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PathNotFoundError(f"generated images folder not found: {folder}", folder)
    if plain_ok and not _any_challenge_name(folder):
        images = list_images(folder)
        if not images:
            raise InputError(f"no .png images in {folder}, nor any other image file (--fid-only reads jpg, bmp, webp, "
                             "tif too)")
        return {0: images}
    groups: dict[int, list[Path]] = {}
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".png")):
        try:
            prompt_idx = int(name.split("_")[0].replace("prompt", ""))
        except ValueError as e:
            raise InputError(f"{folder / name}: not in the challenge layout prompt{{p:04d}}_img{{i:04d}}.png (rename "
                             f"it, or move it out of the folder: every .png counts, as in the challenge script)") from e
        groups.setdefault(prompt_idx, []).append(folder / name)
    if not groups:
        raise InputError(f"no .png images in {folder}: expected prompt0001_img0001.png ... (msdm generate writes them)")
    return groups


def _any_challenge_name(folder: Path) -> bool:
    """Some image of ``folder`` is a ``prompt{p}_img{i}.png``: the folder is meant to be in the challenge layout (a
    stray ``.png`` in it is then an error, as in the script)."""
    import re

    return any(re.match(r"^prompt\d+_img\d+\.png$", p.name) for p in list_images(folder))


def _read_json(path: str | os.PathLike, what: str):
    p = Path(path)
    if not p.is_file():
        raise PathNotFoundError(f"{what} {p} not found", p)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {p} is not a readable UTF-8 JSON file ({e})") from e


def load_prompts(path: str | os.PathLike) -> list[str]:
    """The prompts of a prompt file, in the challenge script's order (``[c for qa in jsons.values() for pair in
    qa.values() for c in pair]`` for the challenge JSON): :func:`msdm.prompts.read_prompts`, the one reader."""
    from msdm.prompts import read_prompts

    return read_prompts(path)


def load_real_mapping(path: str | os.PathLike) -> dict[str, list[str]]:
    data = _read_json(path, "real mapping")
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise InputError(f"real mapping {path}: expected {{\"prompt number\": [real image id, ...]}}")
    return {str(k): [str(i) for i in v] for k, v in data.items()}


# ----------------------------------------------------------------------------------------------------------------
# Real images
# ----------------------------------------------------------------------------------------------------------------


class RealImageFolder:
    """Real images in a folder; an image's id is its file stem (its full file name is accepted too)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise PathNotFoundError(f"real image folder not found: {self.folder}", self.folder)
        self.paths = list_images(self.folder)
        if not self.paths:
            raise InputError(f"no images in real image folder {self.folder}")
        stems = [p.stem for p in self.paths]
        self.ids = stems if len(set(stems)) == len(stems) else [p.name for p in self.paths]
        self._fingerprint = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = folder_fingerprint(self.folder)
        return self._fingerprint

    def describe(self) -> str:
        return str(self.folder)

    def iter_batches(self, batch_size: int) -> Iterator[tuple[list[str], list]]:
        for i in range(0, len(self.paths), batch_size):
            yield self.ids[i:i + batch_size], [load_image(p) for p in self.paths[i:i + batch_size]]

    def aliases(self) -> dict[str, str]:
        return {p.name: i for p, i in zip(self.paths, self.ids)}


class RealImageDataset:
    """Real images from a Hugging Face dataset (a ``save_to_disk`` folder, a local data folder, or a cached hub id)."""

    def __init__(self, name_or_path: str, split: str = "validation", image_column: str = "image",
                 id_column: str = "img_id"):
        import datasets

        from msdm.hub import pretrained_source, resolve

        path, local_only = resolve(name_or_path)
        with pretrained_source(name_or_path, "real-image dataset"):
            if Path(path).is_dir() and ((Path(path) / "dataset_info.json").exists()
                                        or (Path(path) / "dataset_dict.json").exists()
                                        or (Path(path) / "state.json").exists()):
                ds = datasets.load_from_disk(path)
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[split]
            else:
                ds = datasets.load_dataset(path, split=split)
        self.name, self.split, self.image_column, self.id_column = name_or_path, split, image_column, id_column
        all_ids = [str(i) for i in ds[id_column]]
        seen, keep = set(), []
        for row, i in enumerate(all_ids):  # first occurrence of each id, as the script's `seen` filter
            if i not in seen:
                seen.add(i)
                keep.append(row)
        self.rows, self.ids = keep, [all_ids[r] for r in keep]
        self.dataset = ds
        self.fingerprint = dataset_fingerprint("hf-dataset", getattr(ds, "_fingerprint", None) or name_or_path,
                                               split, image_column, id_column, len(ds))

    def describe(self) -> str:
        return f"{self.name} [{self.split}]"

    def iter_batches(self, batch_size: int) -> Iterator[tuple[list[str], list]]:
        for i in range(0, len(self.rows), batch_size):
            rows = self.rows[i:i + batch_size]
            images = self.dataset.select(rows)[self.image_column]
            yield self.ids[i:i + batch_size], [im.convert("RGB") for im in images]

    def aliases(self) -> dict[str, str]:
        return {}


def real_features(source, extractor: FeatureExtractor, cache_dir: str | os.PathLike | None = None,
                  batch_size: int = 32, desc: str | None = None) -> tuple[dict[str, np.ndarray], bool]:
    """``({id: feature}, cache_hit)`` of every real image, from the on-disk cache when it matches; ``desc`` shows a
    progress bar (:mod:`msdm.progress`) while features are computed."""
    from msdm.progress import progress_bar

    def compute():
        ids, feats = [], []
        with progress_bar(total=len(source.ids), desc=desc, unit="img", leave=False, disable=desc is None) as bar:
            for batch_ids, images in source.iter_batches(batch_size):
                ids.extend(batch_ids)
                feats.append(extractor.extract(images, batch_size).numpy())
                bar.update(len(batch_ids))
        return ids, np.concatenate(feats)

    if cache_dir is not None:
        cache = FeatureCache(cache_dir)
        ids, feats = cache.get_or_compute(source.fingerprint, extractor, compute)
        hit = bool(cache.last_hit)
    else:
        (ids, feats), hit = compute(), False
    out = dict(zip(ids, feats))
    for alias, i in source.aliases().items():
        out.setdefault(alias, out[i])
    return out, hit


# ----------------------------------------------------------------------------------------------------------------
# The evaluation
# ----------------------------------------------------------------------------------------------------------------


def _generated_features(groups: Mapping[int, list[Path]], extractor: FeatureExtractor,
                        batch_size: int) -> dict[int, np.ndarray]:
    order = [(p, path) for p in sorted(groups) for path in groups[p]]
    feats = extractor.extract_paths([path for _, path in order], batch_size,
                                    desc=f"{extractor.name} features (generated)").numpy()
    out: dict[int, list] = {}
    for (p, _), f in zip(order, feats):
        out.setdefault(p, []).append(f)
    return {p: np.stack(v) for p, v in out.items()}


def evaluate_generated(
    generated: str | os.PathLike,
    real_source,
    real_mapping: Mapping[str, list[str]] | None,
    biomedclip: FeatureExtractor | None,
    inception: FeatureExtractor | None = None,
    prompts: list[str] | None = None,
    num_images_per_prompt: int = 10,
    reference_compatible: bool = False,
    single_real: str = "error",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    train_source=None,
    calibration_source=None,
    memorization_dir: str | os.PathLike | None = None,
    alpha: float | None = None,
    num_bootstrap: int = 200,
) -> dict:
    """Score a generated folder: the four challenge metrics (``biomedclip``) and/or FID (``inception``). Returns a
    JSON-able dict.

    FID compares all generated images with **all** real images of ``real_source`` (the usual reference-set FID);
    the challenge metrics use the per-prompt real images of ``real_mapping``. With ``biomedclip=None`` only FID is
    computed (``msdm evaluate --fid-only``: no BiomedCLIP weights and no real mapping needed).

    With Inception, ``result["figures"]`` holds FID (bootstrap interval), KID, precision / recall and density /
    coverage, each with n real / n generated and an interval (:func:`msdm.metrics.realism.figures.realism_figures`).
    With ``train_source`` (the generator's training frames), the memorization report: copy fraction (in
    ``figures``), and ``memorization.{csv,json,png}`` in ``memorization_dir`` (default: the generated folder);
    ``calibration_source``: held-out real frames for the copy threshold (default: leave-one-out on the training
    frames).
    """
    if train_source is not None and inception is None:
        raise InputError("the memorization report compares Inception features: it needs the Inception extractor")
    if biomedclip is None and inception is None:
        raise InputError("nothing to compute: give a BiomedCLIP extractor (challenge metrics) and/or Inception (FID)")
    if biomedclip is not None and real_mapping is None:
        raise InputError("the challenge metrics need a real mapping {prompt number: [real image ids]} (--real-mapping)"
                         "; use --fid-only for FID alone")
    groups = parse_generated_folder(generated, plain_ok=biomedclip is None and prompts is None)
    num_files = sum(len(v) for v in groups.values())
    if prompts is not None and num_files != len(prompts) * num_images_per_prompt:
        raise InputError(  # the script: assert len(saved_files) == expected_count
            f"Expected {len(prompts) * num_images_per_prompt} images ({len(prompts)} prompts x "
            f"{num_images_per_prompt}), but found {num_files} in {generated}."
        )
    result = {
        "scores": {},
        "num_prompts_found": len(groups) if 0 not in groups else 0,  # 0: a plain folder (FID only)
        "num_images": num_files,
        "reference_compatible": bool(reference_compatible),
        "single_real": single_real,
        "generated": str(generated),
        "real": real_source.describe(),
        "extractors": {},
        "real_cache_hit": {},
    }
    if biomedclip is not None:
        gen = _generated_features(groups, biomedclip, batch_size)
        real_by_id, real_hit = real_features(real_source, biomedclip, cache_dir, batch_size,
                                             desc="biomedclip features (real)")
        real_pp = real_features_by_prompt(real_by_id, real_mapping, gen)
        scores = challenge_scores(gen, real_pp, reference_compatible=reference_compatible, single_real=single_real)
        pairs = [(r["prompt_a"], r["prompt_b"]) for r in scores["pairs"]]
        real_for_b = {b: real_pp[a] for a, b in pairs}
        per_prompt = per_prompt_metrics({p: gen[p] for pair in pairs for p in pair}, {**real_pp, **real_for_b}, pairs,
                                        single_real)
        result["scores"].update({k: scores[k] for k in ("fidelity", "agreement", "diversity", "FBD")})
        result.update({
            "num_pairs": scores["num_pairs"],
            "num_prompts_scored": scores["num_prompts"],
            "pairs": scores["pairs"],
            "per_prompt": {str(p): {**m, **({"prompt": prompts[p - 1]} if prompts and 0 < p <= len(prompts) else {})}
                           for p, m in per_prompt.items()},
        })
        result["extractors"]["biomedclip"] = biomedclip.describe()
        result["real_cache_hit"]["biomedclip"] = real_hit
    if inception is not None:
        gen_inc = _generated_features(groups, inception, batch_size)
        real_inc, inc_hit = real_features(real_source, inception, cache_dir, batch_size, desc="inception features (real)")
        real_ids = list(dict.fromkeys(real_source.ids))
        gen_all = np.concatenate([gen_inc[p] for p in sorted(gen_inc)])
        real_all = np.stack([real_inc[i] for i in real_ids])
        result["scores"]["FID"] = frechet_distance(gen_all, real_all)
        result["figures"] = realism_figures(gen_all, real_all, num_bootstrap=num_bootstrap)
        if train_source is not None:
            from msdm.metrics.realism.memorization import DEFAULT_ALPHA
            from msdm.metrics.realism.memorization_io import copy_fraction_figure, memorization_of_images

            mem, paths = memorization_of_images(
                [path for p in sorted(groups) for path in groups[p]], gen_all, train_source, inception,
                calibration_source, cache_dir, batch_size, alpha or DEFAULT_ALPHA,
                out_dir=memorization_dir if memorization_dir is not None else generated)
            result["figures"]["copy_fraction"] = copy_fraction_figure(mem)
            result["scores"]["copy_fraction"] = mem.copy_fraction
            result["memorization"] = {**mem.summary(), "files": {k: str(v) for k, v in paths.items()},
                                      "train": train_source.describe(),
                                      "calibration_images": (calibration_source.describe() if calibration_source
                                                             else "none: leave-one-out on the training frames")}
        result["extractors"]["inception"] = inception.describe()
        result["real_cache_hit"]["inception"] = inc_hit
    result["rounded"] = round_scores(result["scores"])
    return result


def format_table(result: Mapping) -> str:
    """A Markdown table of the scores, rounded to 2 decimals as the challenge displays them."""
    names = [("fidelity", "Fidelity ↑"), ("agreement", "Agreement ↑"), ("diversity", "Diversity ↑"),
             ("FBD", "FBD ↓"), ("FID", "FID ↓")]
    cols = [(k, title) for k, title in names if k in result["scores"]]
    head = "| " + " | ".join(t for _, t in cols) + " |"
    sep = "|" + "|".join("---:" for _ in cols) + "|"
    row = "| " + " | ".join(f"{result['scores'][k]:.2f}" for k, _ in cols) + " |"
    if "num_pairs" in result:
        note = (f"{result['num_pairs']} pairs ({result['num_prompts_scored']} of {result['num_prompts_found']} prompts"
                f"{', reference_compatible: first half only' if result['reference_compatible'] else ''}), "
                f"{result['num_images']} images")
    else:
        of = f" of {result['num_prompts_found']} prompts" if result["num_prompts_found"] else " (a plain folder)"
        note = f"FID only: {result['num_images']} images{of} against all real images"
    lines = [head, sep, row, "", note]
    if result.get("figures"):
        lines += ["", "With n and a 95 % interval (Inception features):", format_figures(result["figures"])]
    if result.get("memorization"):
        m = result["memorization"]
        lines += ["", f"memorization: {round(m['copy_fraction'] * m['n_generated'])} of {m['n_generated']} images "
                      f"flagged as copies ({m['flagged_by_features']} by features, {m['flagged_by_pixels']} by "
                      f"pixels) against {m['n_train']} training frames ({m['train']}); threshold "
                      f"calibrated on {m['n_calibration']} frames ({m['calibration']}: {m['calibration_images']}), "
                      f"which it flags at {m['calibration_flagged']:.1%} (α = {m['alpha']}); files: "
                      f"{', '.join(m['files'].values())}"]
    return "\n".join(lines)
