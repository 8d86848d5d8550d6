"""Prompt adherence on the synthetic scenes: does a generated image show what its prompt asks for?

Three parts, usable from a notebook, a callback, ``msdm evaluate --adherence`` and ``bench/adherence.py``:

* :class:`SceneDetector`: images → what they show, in the same vocabulary as :func:`~msdm.metrics.prompt_facts.
  parse_prompt`: the pixel detectors of :mod:`msdm.metrics.detectors` (box artefact, text, instrument presence) and
  the learned :mod:`~msdm.metrics.polyp_detector` (polyp presence, count, size classes, location cells; instrument
  kinds; procedure);
* :func:`judge` / :class:`AdherenceMetric`: per-attribute accuracy of images against what each prompt specifies
  (an attribute a prompt does not mention is not scored), as a torchmetrics metric with summed (DDP-safe) states;
* :func:`paired_adherence`: the same seeds under a prompt and its negation ("containing text" / "not containing
  text"); the gap between the two detection rates is 1 for a generator that follows the prompt and 0 for one that
  ignores it (Prompt to Polyp §5 evaluates prompt faithfulness; this is its measurable core on synthetic data).

:func:`detector_agreement` checks a first stage: the fraction of images whose detector verdicts survive a VAE
round trip (the issue-10 finding: the quickstart VAE erased the box from 26 of 26 renders).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchmetrics import Metric

from msdm.data.scene import CAPTION_LOCATION_ORDER, INSTRUMENTS, LOCATIONS, POLYP_SIZES, PROCEDURES
from msdm.metrics import detectors
from msdm.metrics.polyp_detector import MAX_POLYPS, PolypDetector, load_polyp_detector
from msdm.metrics.prompt_facts import parse_prompt

__all__ = [
    "ATTRIBUTES",
    "PAIRED_ATTRIBUTES",
    "DEFAULT_PAIRS",
    "DEFAULT_PROMPTS",
    "PixelThresholds",
    "SceneDetector",
    "judge",
    "AdherenceMetric",
    "paired_adherence",
    "paired_result",
    "adherence_report",
    "format_paired",
    "format_accuracy",
    "pipeline_generate_fn",
    "module_generate_fn",
    "detector_agreement",
    "as_image_batch",
]

#: Scored attributes, in report order (``AdherenceMetric.compute`` keys, plus ``mean``).
ATTRIBUTES: tuple[str, ...] = ("box", "text", "instrument", "instrument_kind", "polyp", "polyp_count", "polyp_size",
                               "polyp_location", "procedure")
#: Yes/no attributes: the ones paired mode and :func:`detector_agreement` report firing rates for.
PAIRED_ATTRIBUTES: tuple[str, ...] = ("box", "text", "instrument", "polyp")

#: (prompt, its negation) per yes/no attribute, worded as the true captions are (msdm.data.scene_captions).
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

# attribute → the parse_prompt fact it is scored on
_FACT = {"box": "box", "text": "text", "instrument": "instrument", "instrument_kind": "instrument_kinds",
         "polyp": "polyp", "polyp_count": "polyp_count", "polyp_size": "polyp_sizes",
         "polyp_location": "polyp_locations", "procedure": "procedure"}


# =====================================================================================================================
# Images in
# =====================================================================================================================


def as_image_batch(images) -> torch.Tensor:
    """Float [B, 3, H, W] in [0, 1] from a float tensor (same), a uint8 tensor/array [B, H, W, 3], or a list of PIL
    images / uint8 arrays [H, W, 3] / float tensors [3, H, W] (all the same size)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.permute(0, 3, 1, 2) if images.shape[-1] == 3 else images
            return images.float() / 255
        if images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] floats in [0, 1], got shape {tuple(images.shape)}")
        return images.detach().float().cpu()
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return as_image_batch(torch.from_numpy(images))
    out = []
    for img in images:
        if isinstance(img, Image.Image):
            img = np.asarray(img.convert("RGB"))
        if isinstance(img, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(img))
            img = t.permute(2, 0, 1).float() / 255 if t.dtype == torch.uint8 else t.float()
        out.append(img.detach().float().cpu())
    if not out:
        raise ValueError("no images given")
    return torch.stack(out)


# =====================================================================================================================
# Detection
# =====================================================================================================================


@dataclass
class PixelThresholds:
    """Thresholds of the pixel detectors (:mod:`msdm.metrics.detectors`; defaults = theirs, see docs/metrics.md for
    the calibration on VAE reconstructions)."""

    box_dark_or_green: float = 0.75
    box_green: float = 0.02
    text: float = 0.025
    instrument: float = 0.003


class SceneDetector:
    """What synthetic-scene images show: ``detect(images)`` → one dict per image with the keys and value types of
    :func:`~msdm.metrics.prompt_facts.parse_prompt` (``box``, ``text``, ``instrument`` bools; ``instrument_kinds``,
    ``polyp_sizes``, ``polyp_locations`` tuples in vocabulary / caption order; ``polyp`` bool; ``polyp_count`` int;
    ``procedure`` str).

    Args:
        polyp_detector: a :class:`~msdm.metrics.polyp_detector.PolypDetector`, a weights path, or ``"default"``
            (the weights shipped in msdm/assets).
        pixel_thresholds: thresholds of the box / text / instrument pixel detectors.
        device: where the CNN runs (CPU by default; it is small).

    Images: float tensors [B, 3, H, W] in [0, 1] at any resolution, or what :func:`as_image_batch` accepts. The pixel
    detectors look at the full resolution; the CNN at 64 px.
    """

    def __init__(self, polyp_detector: PolypDetector | str | None = "default",
                 pixel_thresholds: PixelThresholds | None = None, device: str | torch.device = "cpu"):
        if polyp_detector is None or isinstance(polyp_detector, str):
            polyp_detector = load_polyp_detector(None if polyp_detector in (None, "default") else polyp_detector,
                                                 device)
        self.polyp_detector = polyp_detector.to(device)
        self.pixel_thresholds = pixel_thresholds or PixelThresholds()
        self.device = torch.device(device)

    def pixel_verdicts(self, images: torch.Tensor) -> dict[str, list[bool]]:
        """Box / text / instrument decisions of the pixel detectors for float images [B, 3, H, W] in [0, 1]."""
        t = self.pixel_thresholds
        arrays = images.permute(0, 2, 3, 1).numpy()  # [B, H, W, 3] float in [0, 1]
        box, text, instrument = [], [], []
        for a in arrays:
            dark_or_green, green = detectors.box_artefact_score(a)
            box.append(dark_or_green >= t.box_dark_or_green and green >= t.box_green)
            text.append(detectors.text_overlay_score(a) >= t.text)
            instrument.append(detectors.instrument_score(a) >= t.instrument)
        return {"box": box, "text": text, "instrument": instrument}

    @torch.no_grad()
    def detect(self, images) -> list[dict]:
        x = as_image_batch(images)
        pixel = self.pixel_verdicts(x)
        probs = self.polyp_detector.probabilities(x.to(self.device))
        cnn = self.polyp_detector.decide(probs)
        out = []
        for i in range(len(x)):
            kinds = cnn["instrument_kinds"][i]
            if pixel["instrument"][i] and not bool(kinds.any()):  # an instrument is there: name the likeliest kind
                kinds = torch.zeros_like(kinds)
                kinds[int(probs["kinds"][i].argmax())] = True
            cells = {LOCATIONS[j] for j in range(len(LOCATIONS)) if cnn["polyp_cells"][i, j]}
            out.append({
                "box": bool(pixel["box"][i]),
                "text": bool(pixel["text"][i]),
                "instrument": bool(pixel["instrument"][i]),
                "instrument_kinds": tuple(k for j, k in enumerate(INSTRUMENTS) if pixel["instrument"][i] and kinds[j]),
                "polyp": bool(cnn["polyp"][i]),
                "polyp_count": int(cnn["polyp_count"][i]),
                "polyp_sizes": tuple(s for j, s in enumerate(POLYP_SIZES) if cnn["polyp_sizes"][i, j]),
                "polyp_locations": tuple(c for c in CAPTION_LOCATION_ORDER if c in cells),
                "procedure": PROCEDURES[int(cnn["gastroscopy"][i])],
            })
        return out

    __call__ = detect


# =====================================================================================================================
# Scoring
# =====================================================================================================================


def judge(facts: Mapping, detected: Mapping) -> dict[str, bool]:
    """``{attribute: the image shows what the prompt asks}`` for the attributes ``facts`` (from
    :func:`~msdm.metrics.prompt_facts.parse_prompt`) specifies and the detector can see.

    Sets are compared exactly (``instrument_kind``: the named kinds and no other; ``polyp_size``: the distinct size
    classes; ``polyp_location``: the covered cells), as the true captions list them exhaustively. Not scored: kinds
    the scenes never draw (metal clip, injection needle) and counts above 3.
    """
    out = {}
    for attr, key in _FACT.items():
        want = facts.get(key)
        if want is None:
            continue
        if attr == "instrument_kind" and not set(want) <= set(INSTRUMENTS):
            continue
        if attr == "polyp_count" and want > MAX_POLYPS:
            continue
        got = detected[key]
        out[attr] = tuple(got) == tuple(want) if isinstance(want, tuple) else got == want
    return out


class AdherenceMetric(Metric):
    """Per-attribute accuracy of generated images against their prompts (see :func:`judge`).

    ``update(images, prompts)``: images as :class:`SceneDetector` takes them, one prompt (str, or a
    ``parse_prompt`` dict) per image. ``compute()`` → ``{attribute: accuracy}`` for :data:`ATTRIBUTES` (NaN where no
    prompt specified it) and ``mean`` (over the attributes with at least one scored image). States are sums (correct,
    scored, prompts, prompts with unparsed sentences), reduced by summing across processes. The detector is a plain
    attribute, not a submodule: its weights never enter a checkpoint. :meth:`counts` gives the scored-image counts.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, detector: SceneDetector | None = None, **kwargs):
        super().__init__(**kwargs)
        self.detector = detector if detector is not None else SceneDetector()
        n = len(ATTRIBUTES)
        self.add_state("correct", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("scored", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("prompts", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("unparsed", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images, prompts: Sequence[str | Mapping], detected: Sequence[Mapping] | None = None) -> None:
        """Score ``images`` against ``prompts`` (one per image). ``detected``: the images' :meth:`SceneDetector.detect`
        output when already computed (``images`` is then ignored and may be None)."""
        facts = [parse_prompt(p) if isinstance(p, str) else p for p in prompts]
        if len(facts) == 0:
            return
        if detected is None:
            detected = self.detector.detect(images)
        if len(detected) != len(facts):
            raise ValueError(f"{len(detected)} images but {len(facts)} prompts: give one prompt per image")
        correct, scored = torch.zeros(len(ATTRIBUTES), dtype=torch.float64), torch.zeros(len(ATTRIBUTES),
                                                                                          dtype=torch.float64)
        for f, d in zip(facts, detected):
            for attr, ok in judge(f, d).items():
                j = ATTRIBUTES.index(attr)
                scored[j] += 1
                correct[j] += float(ok)
        self.correct += correct.to(self.correct.device)
        self.scored += scored.to(self.scored.device)
        self.prompts += len(facts)
        self.unparsed += sum(bool(f.get("unparsed")) for f in facts)

    def compute(self) -> dict[str, torch.Tensor]:
        acc = self.correct / self.scored  # NaN where nothing was scored
        out = {a: acc[j] for j, a in enumerate(ATTRIBUTES)}
        seen = self.scored > 0
        out["mean"] = acc[seen].mean() if bool(seen.any()) else torch.tensor(float("nan"), dtype=torch.float64)
        return out

    def counts(self) -> dict[str, int]:
        """Scored images per attribute, plus ``prompts`` and ``unparsed`` (prompts with a sentence not understood)."""
        out = {a: int(self.scored[j]) for j, a in enumerate(ATTRIBUTES)}
        out.update(prompts=int(self.prompts), unparsed=int(self.unparsed))
        return out


# =====================================================================================================================
# Paired mode
# =====================================================================================================================

GenerateFn = Callable[[list[str], list[int]], torch.Tensor]


def _check_pairs(pairs: Mapping[str, tuple[str, str]]) -> None:
    for attr, (pos, neg) in pairs.items():
        if attr not in PAIRED_ATTRIBUTES:
            raise ValueError(f"paired attribute {attr!r} is not one of {PAIRED_ATTRIBUTES}")
        fp, fn = parse_prompt(pos), parse_prompt(neg)
        if fp[attr] is not True or fn[attr] is not False:
            raise ValueError(f"pair {attr!r}: {pos!r} must ask for it and {neg!r} must ask for its absence "
                             f"(parsed {attr}={fp[attr]} / {fn[attr]})")


def paired_adherence(
    generate_fn: GenerateFn,
    pairs: Mapping[str, tuple[str, str]] = DEFAULT_PAIRS,
    num_images: int = 24,
    seed: int = 0,
    detector: SceneDetector | None = None,
    seeds: Sequence[int] | None = None,
) -> dict:
    """Detection rate of each attribute under its prompt and under its negation, with the same seeds.

    ``generate_fn(prompts, seeds)`` returns float images [N, 3, H, W] in [0, 1], image ``i`` drawn for
    ``prompts[i]`` from seed ``seeds[i]`` (see :func:`pipeline_generate_fn`, :func:`module_generate_fn`). It is
    called once with every prompt of every pair, ``num_images`` each, seeds ``seed .. seed + num_images - 1`` (or
    ``seeds``: a callback passes its rank's share), so a batched generator batches across pairs.

    Returns ``{attr: {"pos": rate, "neg": rate, "gap": pos - neg, "n": images per prompt, "pos_count": k,
    "neg_count": k}, ..., "mean_gap": mean over the pairs}``.
    """
    _check_pairs(pairs)
    detector = detector if detector is not None else SceneDetector()
    seeds = list(range(seed, seed + num_images)) if seeds is None else [int(s) for s in seeds]
    n = len(seeds)
    prompts, all_seeds = [], []
    for pos, neg in pairs.values():
        for p in (pos, neg):
            prompts += [p] * n
            all_seeds += seeds
    images = _generate(generate_fn, prompts, all_seeds)
    return paired_result(_pair_counts(detector.detect(images) if len(images) else [], pairs, n), n)


def _generate(generate_fn: GenerateFn, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    if not prompts:
        return torch.zeros(0, 3, 1, 1)
    images = generate_fn(prompts, seeds)
    if len(images) != len(prompts):
        raise ValueError(f"generate_fn returned {len(images)} images for {len(prompts)} prompts")
    return images


def _pair_counts(detected: list[dict], pairs: Mapping, n: int) -> dict[str, tuple[int, int]]:
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
    generate_fn: GenerateFn,
    pairs: Mapping[str, tuple[str, str]] = DEFAULT_PAIRS,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    num_images: int = 24,
    seed: int = 0,
    detector: SceneDetector | None = None,
) -> dict:
    """Paired mode and per-attribute accuracy from one ``generate_fn`` call: ``{"paired": paired_adherence's
    table, "accuracy": AdherenceMetric.compute() as floats, "counts": AdherenceMetric.counts()}``.

    Every pair prompt and every prompt of ``prompts`` gets ``num_images`` images with seeds ``seed ..
    seed + num_images - 1``; images of a prompt that is both in a pair and in ``prompts`` are generated once.
    """
    _check_pairs(pairs)
    detector = detector if detector is not None else SceneDetector()
    seeds = list(range(seed, seed + num_images))
    pair_prompts = [p for pos_neg in pairs.values() for p in pos_neg]
    unique = list(dict.fromkeys([*pair_prompts, *prompts]))
    images = _generate(generate_fn, [p for p in unique for _ in seeds], seeds * len(unique))
    detected = detector.detect(images) if len(images) else []
    by_prompt = {p: detected[i * num_images : (i + 1) * num_images] for i, p in enumerate(unique)}
    paired = paired_result(_pair_counts([d for p in pair_prompts for d in by_prompt[p]], pairs, num_images),
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


def format_accuracy(accuracy: Mapping, counts: Mapping) -> str:
    """Per-attribute accuracy as text, with the number of scored images."""
    lines = [f"{'attribute':<16}{'accuracy':>10}{'images':>8}"]
    for attr in ATTRIBUTES:
        if counts.get(attr):
            lines.append(f"{attr:<16}{accuracy[attr]:>10.3f}{counts[attr]:>8d}")
    lines.append(f"{'mean':<16}{accuracy['mean']:>10.3f}")
    if counts.get("unparsed"):
        lines.append(f"({counts['unparsed']} of {counts['prompts']} prompts had sentences the parser does not know; "
                     "only the sentences it knows were scored)")
    return "\n".join(lines)


def _seed_runs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` index ranges over which ``seeds`` count up by one."""
    runs, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def pipeline_generate_fn(pipe, batch_size: int = 32, **call_kwargs) -> GenerateFn:
    """A ``generate_fn`` for an :class:`~msdm.pipeline.MSDMPipeline`: image ``i`` is drawn from its own
    ``torch.Generator`` seeded ``seeds[i]`` (as :func:`msdm.generation.generate_images` seeds image ``k`` with
    ``seed + k``), in batches of ``batch_size`` whatever the prompts; ``call_kwargs`` go to the pipeline
    (``guidance_scale``, ``num_inference_steps``, ...)."""

    @torch.no_grad()
    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        device = pipe._execution_device
        out = []
        for start in range(0, len(prompts), batch_size):
            gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds[start : start + batch_size]]
            out.append(pipe(list(prompts[start : start + batch_size]), generator=gens, output_type="pt",
                            **call_kwargs).images.float().cpu())
        return torch.cat(out)

    return generate


def module_generate_fn(module, **generate_kwargs) -> GenerateFn:
    """A ``generate_fn`` for an :class:`~lightning_modules.MSDMUNetModule` (anything with its
    ``generate(prompts, num_images_per_prompt, seed, **kwargs)``, which seeds image ``k`` with ``seed + k``): one
    ``generate`` call per run of consecutive seeds (paired mode makes two runs per pair)."""

    def generate(prompts: list[str], seeds: list[int]) -> torch.Tensor:
        out = []
        for a, b in _seed_runs(seeds):
            out.append(module.generate(list(prompts[a:b]), num_images_per_prompt=1, seed=int(seeds[a]),
                                       **generate_kwargs))
        return torch.cat(out)

    return generate


# =====================================================================================================================
# First-stage check
# =====================================================================================================================


def detector_agreement(images, reconstructions, detector: SceneDetector | None = None) -> dict[str, dict]:
    """Per attribute: ``agreement`` (the fraction of images whose detector verdict on the reconstruction equals the
    verdict on the input), and for yes/no attributes ``rate_inputs`` / ``rate_reconstructions`` (how often it fires
    on each). A first stage that keeps what the prompts name has agreement 1 for every attribute."""
    detector = detector if detector is not None else SceneDetector()
    a, b = detector.detect(images), detector.detect(reconstructions)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} images but {len(b)} reconstructions")
    out = {}
    for attr, key in _FACT.items():
        res = {"agreement": float(np.mean([x[key] == y[key] for x, y in zip(a, b)]))}
        if attr in PAIRED_ATTRIBUTES:
            res["rate_inputs"] = float(np.mean([x[key] for x in a]))
            res["rate_reconstructions"] = float(np.mean([y[key] for y in b]))
        out[attr] = res
    return out
