"""Paired prompt adherence: the same seeds under a prompt and its negation ("containing text" / "not containing
text"). The gap between the two detection rates is 1 for a generator that follows the prompt and 0 for one that
ignores it (Prompt to Polyp §5 evaluates prompt faithfulness; this is its measurable core on synthetic data).
:func:`adherence_report` runs paired mode and the per-attribute metric from one batched generation pass.

A generator is any object with ``generate(prompts, seeds)`` (:class:`msdm.generators.Generator`), or such a function
itself; a detector is any object with ``detect(images)`` in the prompt-fact vocabulary
(:class:`~msdm.metrics.adherence.detector.Detector`; default: the synthetic scenes' ``SceneDetector``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from msdm.metrics.adherence.detector import Detector, default_detector
from msdm.metrics.adherence.metric import PAIRED_ATTRIBUTES, AdherenceMetric
from msdm.synthetic.prompt_facts import parse_prompt

#: (prompt, its negation) per yes/no attribute, worded as the true captions are (msdm.synthetic.captions).
DEFAULT_PAIRS: dict[str, tuple[str, str]] = {
    "box": ("Generate an image containing a green/black box artefact.",
            "Generate an image not containing a green/black box artefact."),
    "text": ("Generate an image containing text.", "Generate an image not containing text."),
    "instrument": ("Generate an image with 1 instrument.", "Generate an image with no instruments."),
    "polyp": ("Generate an image containing a polyp.", "Generate an image with no polyps."),
}

#: Single prompts covering every scored attribute (bench/adherence.py's AdherenceMetric set).
DEFAULT_PROMPTS: tuple[str, ...] = (
    *(p for pair in DEFAULT_PAIRS.values() for p in pair),
    "Generate an image containing tube.",
    "Generate an image containing biopsy forceps.",
    "Generate an image with 2 polyps.",
    "Generate an image with 3 polyps.",
    "Generate an image with a polyp of size < 5mm.",
    "Generate an image with a polyp of size >20mm.",
    "Generate an image with an an abnormality located in the center.",
    "Generate an image from a colonoscopy procedure.",
    "Generate an image from a gastroscopy procedure.",
)


# =====================================================================================================================
# Paired mode
# =====================================================================================================================

__all__ = ["DEFAULT_PAIRS", "DEFAULT_PROMPTS", "GenerateFn", "adherence_report", "check_pairs", "format_paired",
           "module_generate_fn", "pair_counts", "paired_adherence", "paired_result", "pipeline_generate_fn"]

GenerateFn = Callable[[list[str], list[int]], torch.Tensor]  # (prompts, seeds) -> images in [0, 1]


def check_pairs(pairs: Mapping[str, tuple[str, str]]) -> None:
    for attr, (pos, neg) in pairs.items():
        if attr not in PAIRED_ATTRIBUTES:
            raise ValueError(f"paired attribute {attr!r} is not one of {PAIRED_ATTRIBUTES}")
        fp, fn = parse_prompt(pos), parse_prompt(neg)
        if fp[attr] is not True or fn[attr] is not False:
            raise ValueError(f"pair {attr!r}: {pos!r} must ask for it and {neg!r} must ask for its absence "
                             f"(parsed {attr}={fp[attr]} / {fn[attr]})")


def paired_adherence(
    generator,
    pairs: Mapping[str, tuple[str, str]] = DEFAULT_PAIRS,
    num_images: int = 24,
    seed: int = 0,
    detector: Detector | None = None,
    seeds: Sequence[int] | None = None,
) -> dict:
    """Detection rate of each attribute under its prompt and under its negation, with the same seeds.

    ``generator.generate(prompts, seeds)`` (or ``generator(prompts, seeds)``) returns float images [N, 3, H, W] in
    [0, 1], image ``i`` drawn for ``prompts[i]`` from seed ``seeds[i]`` (:mod:`msdm.generators`). It is
    called once with every prompt of every pair, ``num_images`` each, seeds ``seed .. seed + num_images - 1`` (or
    ``seeds``: a callback passes its rank's share), so a batched generator batches across pairs.

    Returns ``{attr: {"pos": rate, "neg": rate, "gap": pos - neg, "n": images per prompt, "pos_count": k,
    "neg_count": k}, ..., "mean_gap": mean over the pairs}``.
    """
    check_pairs(pairs)
    detector = default_detector(detector)
    seeds = list(range(seed, seed + num_images)) if seeds is None else [int(s) for s in seeds]
    n = len(seeds)
    prompts, all_seeds = [], []
    for pos, neg in pairs.values():
        for p in (pos, neg):
            prompts += [p] * n
            all_seeds += seeds
    images = _generate(generator, prompts, all_seeds)
    return paired_result(pair_counts(detector.detect(images) if len(images) else [], pairs, n), n)


def _generate(generator, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    if not prompts:
        return torch.zeros(0, 3, 1, 1)
    generate = generator.generate if hasattr(generator, "generate") else generator
    images = generate(prompts, seeds)
    if len(images) != len(prompts):
        raise ValueError(f"generate_fn returned {len(images)} images for {len(prompts)} prompts")
    return images


def pair_counts(detected: list[dict], pairs: Mapping, n: int) -> dict[str, tuple[int, int]]:
    """Detections per pair from the verdicts of images laid out pair by pair: ``n`` positive, then ``n`` negative."""
    counts = {}
    for k, attr in enumerate(pairs):
        block = detected[2 * k * n : (2 * k + 2) * n]
        counts[attr] = (sum(bool(d[attr]) for d in block[:n]), sum(bool(d[attr]) for d in block[n:]))
    return counts


def paired_result(counts: Mapping[str, tuple[float, float]], n: float) -> dict:
    """The :func:`paired_adherence` table from detection counts ``{attr: (under the prompt, under its negation)}``
    out of ``n`` images per prompt (a callback sums counts over ranks first)."""
    out: dict = {}
    for attr, (pos, neg) in counts.items():
        rp, rn = (pos / n, neg / n) if n else (float("nan"), float("nan"))
        out[attr] = {"pos": rp, "neg": rn, "gap": rp - rn, "n": int(n), "pos_count": int(pos), "neg_count": int(neg)}
    out["mean_gap"] = float(np.mean([out[a]["gap"] for a in counts])) if counts else float("nan")
    return out


def adherence_report(
    generator,
    pairs: Mapping[str, tuple[str, str]] = DEFAULT_PAIRS,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    num_images: int = 24,
    seed: int = 0,
    detector: Detector | None = None,
) -> dict:
    """Paired mode and per-attribute accuracy from one ``generate`` call: ``{"paired": paired_adherence's
    table, "accuracy": AdherenceMetric.compute() as floats, "counts": AdherenceMetric.counts()}``.

    Every pair prompt and every prompt of ``prompts`` gets ``num_images`` images with seeds ``seed ..
    seed + num_images - 1``; images of a prompt that is both in a pair and in ``prompts`` are generated once.
    """
    check_pairs(pairs)
    detector = default_detector(detector)
    seeds = list(range(seed, seed + num_images))
    pair_prompts = [p for pos_neg in pairs.values() for p in pos_neg]
    unique = list(dict.fromkeys([*pair_prompts, *prompts]))
    images = _generate(generator, [p for p in unique for _ in seeds], seeds * len(unique))
    detected = detector.detect(images) if len(images) else []
    by_prompt = {p: detected[i * num_images : (i + 1) * num_images] for i, p in enumerate(unique)}
    paired = paired_result(pair_counts([d for p in pair_prompts for d in by_prompt[p]], pairs, num_images),
                           num_images)
    metric = AdherenceMetric(detector)
    for p in prompts:
        metric.update(None, [p] * num_images, detected=by_prompt[p])
    return {"paired": paired, "accuracy": {k: float(v) for k, v in metric.compute().items()},
            "counts": metric.counts()}


def format_paired(paired: Mapping) -> str:
    """The paired table as text: rate under the prompt, under its negation, gap; mean gap."""
    lines = [f"{'attribute':<12}{'rate pos':>10}{'rate neg':>10}{'gap':>8}{'n':>6}"]
    for attr, r in paired.items():
        if attr != "mean_gap":
            lines.append(f"{attr:<12}{r['pos']:>10.3f}{r['neg']:>10.3f}{r['gap']:>+8.3f}{r['n']:>6d}")
    lines.append(f"{'mean gap':<32}{paired['mean_gap']:>+8.3f}")
    return "\n".join(lines)


def pipeline_generate_fn(pipe, batch_size: int = 32, **call_kwargs) -> GenerateFn:
    """Deprecated: ``msdm.generators.MSDMGenerator(pipe, batch_size=..., **settings).generate`` (image ``i`` from
    its own generator seeded ``seeds[i]``; ``call_kwargs`` go to the pipeline)."""
    from msdm.diffusion import REFERENCE_STEPS
    from msdm.generators import MSDMGenerator

    kw = dict(call_kwargs)  # the pipeline's own defaults where a setting is not given (its __call__'s)
    return MSDMGenerator(pipe, steps=kw.pop("num_inference_steps", REFERENCE_STEPS),
                         guidance_scale=kw.pop("guidance_scale", None), eta=kw.pop("eta", 1.0), batch_size=batch_size,
                         call_kwargs=kw).generate


def module_generate_fn(module, **generate_kwargs) -> GenerateFn:
    """Deprecated: ``msdm.generators.ModuleGenerator(module, **generate_kwargs).generate`` (a module with the
    generator protocol of docs/CONVENTIONS.md)."""
    from msdm.generators import ModuleGenerator

    return ModuleGenerator(module, **generate_kwargs).generate
