"""What images of real colonoscopy frames (and generated ones) show: :class:`RealFrameDetector`, in the vocabulary of
:func:`msdm.facts.grammar.parse_prompt`; and :func:`score_real_detector`, its accuracy on frames with known facts.

The facts are those real-frame captions state (:mod:`msdm.facts.frames`): ``polyp``, ``polyp_count``,
``polyp_sizes`` and ``polyp_locations`` from the polyp mask the tiny U-Net (:mod:`msdm.metrics.adherence.real_frame_net`)
predicts, read with the same definitions as a true mask (:func:`msdm.facts.frames.mask_facts`: min area, size
classes as shares of the frame, location cells); ``box`` and ``text`` from the same network's overlay head. It is
the real-data counterpart of :class:`~msdm.synthetic.scene_detector.SceneDetector` (synthetic scenes), with the same
``detect(images) -> list[dict]`` interface, so the adherence machinery takes either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from msdm.facts.frames import FrameFacts, components, mask_facts, read_mask
from msdm.facts.grammar import parse_prompt
from msdm.facts.vocabulary import LOCATIONS
from msdm.metrics.adherence.real_frame_net import RealFrameModel, load_real_frame_model

__all__ = ["RealFrameDetector", "predicted_mask_facts", "load_frames", "score_real_detector", "REAL_FACT_KEYS", "REAL_PAIRS", "LARGE_SIZES"]

#: The facts :meth:`RealFrameDetector.detect` reports (plus the yes/no keys of :data:`REAL_PAIRS`).
REAL_FACT_KEYS = ("box", "text", "polyp", "polyp_count", "polyp_sizes", "polyp_locations")
#: Size classes that count as "large" for the size pair: polyps covering at least 10 % of the frame.
LARGE_SIZES = ("11-20mm", ">20mm")

#: Paired adherence on real attributes: ``{key: (prompt, contrast)}``, both verbatim MEDVQA-GI prompts; ``key`` is
#: the yes/no entry of :meth:`RealFrameDetector.detect` whose rate is compared under the two prompts (same seeds).
REAL_PAIRS: dict[str, tuple[str, str]] = {
    "box": ("Generate an image containing a green/black box artefact.",
            "Generate an image not containing a green/black box artefact."),
    "text": ("Generate an image containing text.", "Generate an image not containing text."),
    # polyp size, large vs small: the largest polyp found covers >= 10 % of the frame ("11-20mm" or ">20mm")
    "polyp_large": ("Generate an image with a polyp of size >20mm.", "Generate an image with a polyp of size < 5mm."),
    # polyp count, several vs one
    "polyp_several": ("Generate an image with 2 polyps.", "Generate an image with 1 polyp."),
    # polyp location (reported): a polyp covers the upper-left cell, vs asked in the lower-right
    "polyp_at_upper-left": ("Generate an image with an an abnormality located in the upper-left.",
                            "Generate an image with an an abnormality located in the lower-right."),
}


def predicted_mask_facts(mask: np.ndarray, min_rel: float = 0.0) -> FrameFacts:
    """:func:`~msdm.facts.frames.mask_facts` of a predicted mask, whose components smaller than ``min_rel`` times
    the largest are dropped first: a 64 px U-Net's masks fragment (a polyp's rim, a fold), and each fragment would
    count as a polyp. ``min_rel`` is calibrated with the network (its ``thresholds``)."""
    mask = np.asarray(mask, dtype=bool)
    if min_rel > 0:
        comps = components(mask)
        if len(comps) > 1:
            labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
            keep = [c["label"] for c in comps if c["area"] >= min_rel * comps[0]["area"]]
            mask = np.isin(labels, keep)
    return mask_facts(mask)


def _as_batch(images) -> torch.Tensor:
    from msdm.synthetic.scene_detector import as_image_batch

    return as_image_batch(images)


class RealFrameDetector:
    """Real-frame facts of images: ``detect(images)`` → one dict per image (:data:`REAL_FACT_KEYS`).

    Args:
        model: a :class:`~msdm.metrics.adherence.real_frame_net.RealFrameModel`, a weights path, or ``"default"`` (the
            weights shipped in msdm/assets).
        device: where the network runs (CPU by default; it is small).

    Images: float tensors [B, 3, H, W] in [0, 1] at any resolution (resized to 64 px), or what
    :func:`msdm.synthetic.scene_detector.as_image_batch` accepts.
    """

    instrument_kinds: tuple[str, ...] = ()  # it sees no instruments (a prompt naming kinds is not scored)
    max_polyps: int = 16  # the largest count the prompts state

    def __init__(self, model: RealFrameModel | str | None = "default", device: str | torch.device = "cpu"):
        if model is None or isinstance(model, str):
            model = load_real_frame_model(None if model in (None, "default") else model, device)
        self.model = model.to(device)
        self.device = torch.device(device)

    def frame_facts(self, images) -> list[FrameFacts]:
        """:class:`~msdm.facts.frames.FrameFacts` of each image (the predicted mask read as a true one)."""
        x = _as_batch(images)
        p = self.model.probabilities(x.to(self.device))
        t = self.model.thresholds
        out = []
        for i in range(len(x)):
            f = predicted_mask_facts((p["mask"][i] >= t["mask"]).numpy(), t.get("min_rel", 0.0))
            out.append(replace(f, box=bool(p["box"][i] >= t["box"]), text=bool(p["text"][i] >= t["text"])))
        return out

    def detect(self, images) -> list[dict]:
        """One dict per image: :data:`REAL_FACT_KEYS` (values as :func:`~msdm.facts.grammar.parse_prompt` gives
        them) and the yes/no keys of paired mode: ``polyp_large`` (the largest polyp is in :data:`LARGE_SIZES`),
        ``polyp_several`` (more than one polyp), ``polyp_at_<cell>`` for each of the nine location cells."""
        out = []
        for f in self.frame_facts(images):
            d = {"box": f.box, "text": f.text, "polyp": f.polyp_count > 0, "polyp_count": f.polyp_count,
                 "polyp_sizes": f.polyp_sizes, "polyp_locations": f.polyp_locations,
                 "polyp_large": bool(f.polyp_sizes) and f.polyp_sizes[-1] in LARGE_SIZES,
                 "polyp_several": f.polyp_count > 1}
            d.update({f"polyp_at_{c}": c in f.polyp_locations for c in LOCATIONS})
            out.append(d)
        return out

    @staticmethod
    def check_pair(attr: str, pos: str, neg: str) -> None:
        """Raise ``ValueError`` unless ``pos`` asks for ``attr`` and ``neg`` for its contrast (read by
        :func:`~msdm.facts.grammar.parse_prompt`): box / text present vs absent, a large vs a small size class,
        several polyps vs one, a location cell vs a prompt without it."""
        fp, fn = parse_prompt(pos), parse_prompt(neg)
        if attr in ("box", "text"):
            ok = fp[attr] is True and fn[attr] is False
        elif attr == "polyp_large":
            ok = bool(fp["polyp_sizes"]) and fp["polyp_sizes"][-1] in LARGE_SIZES and bool(fn["polyp_sizes"]) \
                and fn["polyp_sizes"][-1] not in LARGE_SIZES
        elif attr == "polyp_several":
            ok = (fp["polyp_count"] or 0) > 1 and fn["polyp_count"] == 1
        elif attr.startswith("polyp_at_") and attr[len("polyp_at_"):] in LOCATIONS:
            cell = attr[len("polyp_at_"):]
            ok = cell in (fp["polyp_locations"] or ()) and cell not in (fn["polyp_locations"] or ())
        else:
            raise ValueError(f"unknown real-frame pair attribute {attr!r}; known: box, text, polyp_large, "
                             f"polyp_several, polyp_at_<cell>")
        if not ok:
            raise ValueError(f"pair {attr!r}: {pos!r} must ask for it and {neg!r} for its contrast")

    __call__ = detect


def load_frames(frames: Sequence[tuple[str, object, object]], resolution: int = 64) -> torch.Tensor:
    """Float [N, 3, r, r] in [0, 1] of ``[(id, image path, ...)]``: each frame reduced by area averaging."""
    out = []
    for _, path, *_ in frames:
        with Image.open(path) as img:
            a = np.asarray(img.convert("RGB").resize((resolution, resolution), Image.BOX))
        out.append(torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def _largest_size(f: FrameFacts) -> str | None:
    return f.polyp_sizes[-1] if f.polyp_sizes else None


def score_real_detector(detector: RealFrameDetector, frames: Sequence[tuple[str, object, FrameFacts]],
                        masks: Sequence[object] | None = None, labels: dict | None = None, resolution: int = 64,
                        reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        batch_size: int = 64) -> dict[str, float]:
    """Accuracy of ``detector`` on frames with known facts.

    Args:
        frames: ``[(id, image path, true FrameFacts)]`` (e.g. from :func:`msdm.facts.table.facts_table`).
        masks: the frames' mask paths (for ``dice``; optional).
        labels: ``{id: (box, text)}`` hand labels (``None`` entries: not scored); default: the facts' box / text.
        resolution: side the frames are given to the detector at (64 or 128: the generated sizes).
        reconstruct: ``f(images [N, 3, r, r] in [0, 1]) -> same``: score reconstructions (e.g. by a VAE) instead.

    Returns ``box``, ``text`` (accuracy), ``polyp`` (a polyp found: all Kvasir-SEG frames show one), ``count``
    (exact), ``count_several`` (one vs several), ``size`` (the set of size classes, exact), ``size_largest`` (class
    of the largest polyp), ``cells`` (per-cell accuracy over the 9 cells), ``locations`` (the set of cells, exact),
    ``dice`` (mean, 64 px; with ``masks``), and ``n``.
    """
    x = load_frames(frames, resolution)
    if reconstruct is not None:
        x = torch.cat([reconstruct(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).clamp(0, 1)
    pred = [f for i in range(0, len(x), batch_size) for f in detector.frame_facts(x[i : i + batch_size])]
    acc: dict[str, list[float]] = {k: [] for k in ("box", "text", "polyp", "count", "count_several", "size",
                                                   "size_largest", "cells", "locations")}
    for (fid, _, t), p in zip(frames, pred):
        box, text = (labels or {}).get(fid, (t.box, t.text))
        if box is not None:
            acc["box"].append(p.box == box)
        if text is not None:
            acc["text"].append(p.text == text)
        acc["polyp"].append((p.polyp_count > 0) == (t.polyp_count > 0))
        acc["count"].append(p.polyp_count == t.polyp_count)
        acc["count_several"].append((p.polyp_count > 1) == (t.polyp_count > 1))
        acc["size"].append(p.polyp_sizes == t.polyp_sizes)
        acc["size_largest"].append(_largest_size(p) == _largest_size(t))
        acc["cells"].append(np.mean([(c in p.polyp_locations) == (c in t.polyp_locations) for c in LOCATIONS]))
        acc["locations"].append(set(p.polyp_locations) == set(t.polyp_locations))
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in acc.items()}
    if masks is not None:
        probs = torch.cat([detector.model.probabilities(x[i : i + batch_size])["mask"]
                           for i in range(0, len(x), batch_size)])
        pm = (probs >= detector.model.thresholds["mask"]).numpy()
        dice = []
        for m_path, m in zip(masks, pm):
            tm = read_mask(m_path, m.shape[0])
            dice.append(2 * (tm & m).sum() / max(1, tm.sum() + m.sum()))
        out["dice"] = float(np.mean(dice))
    out["n"] = len(frames)
    return out
