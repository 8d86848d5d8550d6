"""Per-attribute prompt adherence: :func:`judge` one image against its prompt, :class:`AdherenceMetric` over many
(torchmetrics, summed states: DDP-safe), :func:`evaluate_adherence_folder` for a folder of generated images.

A prompt is read by :func:`~msdm.synthetic.prompt_facts.parse_prompt`, an image by a detector
(:mod:`msdm.metrics.adherence.detector`; default: the synthetic scenes' ``SceneDetector``); an attribute the prompt
does not mention is not scored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchmetrics import Metric

from msdm.metrics.adherence.detector import Detector, default_detector
from msdm.synthetic.polyp_detector import MAX_POLYPS
from msdm.synthetic.prompt_facts import parse_prompt
from msdm.synthetic.scene import INSTRUMENTS

__all__ = ["ATTRIBUTES", "PAIRED_ATTRIBUTES", "FACT_OF", "judge", "AdherenceMetric", "format_accuracy",
           "evaluate_adherence_folder", "read_generated_prompts"]

#: Scored attributes, in report order (``AdherenceMetric.compute`` keys, plus ``mean``).
ATTRIBUTES: tuple[str, ...] = ("box", "text", "instrument", "instrument_kind", "polyp", "polyp_count", "polyp_size",
                               "polyp_location", "procedure")
#: Yes/no attributes: the ones paired mode and :func:`detector_agreement` report firing rates for.
PAIRED_ATTRIBUTES: tuple[str, ...] = ("box", "text", "instrument", "polyp")

# attribute → the parse_prompt fact it is scored on
FACT_OF = {"box": "box", "text": "text", "instrument": "instrument", "instrument_kind": "instrument_kinds",
         "polyp": "polyp", "polyp_count": "polyp_count", "polyp_size": "polyp_sizes",
         "polyp_location": "polyp_locations", "procedure": "procedure"}



def judge(facts: Mapping, detected: Mapping, instrument_kinds: Sequence[str] = INSTRUMENTS,
          max_polyps: int = MAX_POLYPS) -> dict[str, bool]:
    """``{attribute: the image shows what the prompt asks}`` for the attributes ``facts`` (from
    :func:`~msdm.synthetic.prompt_facts.parse_prompt`) specifies and the detector can see.

    Sets are compared exactly (``instrument_kind``: the named kinds and no other; ``polyp_size``: the distinct size
    classes; ``polyp_location``: the covered cells), as the true captions list them exhaustively. Not scored: kinds
    the detector cannot tell apart (``instrument_kinds``; the scenes never draw a metal clip or an injection
    needle), counts above ``max_polyps`` and facts the detector does not report.
    """
    out = {}
    for attr, key in FACT_OF.items():
        want = facts.get(key)
        if want is None:
            continue
        if attr == "instrument_kind" and not set(want) <= set(instrument_kinds):
            continue
        if (attr == "polyp_count" and want > max_polyps) or key not in detected:
            continue
        got = detected[key]
        out[attr] = tuple(got) == tuple(want) if isinstance(want, tuple) else got == want
    return out


class AdherenceMetric(Metric):
    """Per-attribute accuracy of generated images against their prompts (see :func:`judge`).

    ``update(images, prompts)``: images as the detector takes them, one prompt (str, or a
    ``parse_prompt`` dict) per image. ``compute()`` → ``{attribute: accuracy}`` for :data:`ATTRIBUTES` (NaN where no
    prompt specified it) and ``mean`` (over the attributes with at least one scored image). States are sums (correct,
    scored, prompts, prompts with unparsed sentences), reduced by summing across processes. The detector is a plain
    attribute, not a submodule: its weights never enter a checkpoint. :meth:`counts` gives the scored-image counts.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, detector: Detector | None = None, **kwargs):
        super().__init__(**kwargs)
        self.detector = default_detector(detector)
        n = len(ATTRIBUTES)
        self.add_state("correct", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("scored", torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("prompts", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("unparsed", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, images, prompts: Sequence[str | Mapping], detected: Sequence[Mapping] | None = None) -> None:
        """Score ``images`` against ``prompts`` (one per image). ``detected``: the images' ``detector.detect``
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
            for attr, ok in judge(f, d, self._kinds, self._max_polyps).items():
                j = ATTRIBUTES.index(attr)
                scored[j] += 1
                correct[j] += float(ok)
        self.correct += correct.to(self.correct.device)
        self.scored += scored.to(self.scored.device)
        self.prompts += len(facts)
        self.unparsed += sum(bool(f.get("unparsed")) for f in facts)

    @property
    def _kinds(self):
        return getattr(self.detector, "instrument_kinds", INSTRUMENTS)

    @property
    def _max_polyps(self) -> int:
        return int(getattr(self.detector, "max_polyps", MAX_POLYPS))

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


# =====================================================================================================================
# A folder of generated images (msdm evaluate --adherence)
# =====================================================================================================================


def read_generated_prompts(path: str | os.PathLike) -> dict[int, str]:
    """``{prompt number (1-based): prompt}``: :func:`msdm.prompts.read_numbered_prompts`."""
    from msdm.prompts import read_numbered_prompts

    return read_numbered_prompts(path)


def evaluate_adherence_folder(folder: str | os.PathLike, prompts: str | os.PathLike | Mapping[int, str] | None = None,
                              detector: Detector | None = None, batch_size: int = 64) -> dict:
    """Per-attribute adherence of a folder in the challenge layout (``prompt{p:04d}_img{i:04d}.png``).

    ``prompts``: a prompts file (default: the folder's ``prompts.json``, as ``msdm generate`` writes it) or
    ``{number: prompt}``. Returns ``{"accuracy": {attr: value, "mean": value}, "counts": AdherenceMetric.counts(),
    "per_prompt": {number: {"prompt": str, "images": n, "accuracy": {attr: value}}}}`` (NaN: not specified).
    """
    from msdm.metrics.realism.evaluate import parse_generated_folder
    from msdm.metrics.realism.features import load_image

    folder = Path(folder)
    groups = parse_generated_folder(folder)
    if prompts is None:
        prompts = folder / "prompts.json"
        if not prompts.is_file():
            raise FileNotFoundError(f"{prompts} not found: pass the prompt file the images were generated from "
                                    "(--prompts)")
    by_number = dict(prompts) if isinstance(prompts, Mapping) else read_generated_prompts(prompts)
    missing = sorted(set(groups) - set(by_number))
    if missing:
        raise ValueError(f"images for prompt numbers {missing[:10]} but the prompt file has {len(by_number)} prompts "
                         f"(numbers {min(by_number, default=0)}..{max(by_number, default=0)}): wrong prompt file?")
    detector = default_detector(detector)
    total = AdherenceMetric(detector)
    per_prompt = {}
    for number, paths in sorted(groups.items()):
        metric = AdherenceMetric(detector)
        for start in range(0, len(paths), batch_size):
            images = [load_image(p) for p in paths[start : start + batch_size]]
            detected = detector.detect(images)
            prompt_list = [by_number[number]] * len(images)
            metric.update(None, prompt_list, detected=detected)
            total.update(None, prompt_list, detected=detected)
        per_prompt[number] = {"prompt": by_number[number], "images": len(paths),
                              "accuracy": {k: float(v) for k, v in metric.compute().items()}}
    return {"accuracy": {k: float(v) for k, v in total.compute().items()}, "counts": total.counts(),
            "per_prompt": per_prompt}
