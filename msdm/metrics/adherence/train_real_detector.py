"""Train, calibrate and measure the real-frame detector (:mod:`msdm.metrics.adherence.real_frame_net`) on CPU, deterministically.

    python -m msdm.metrics.adherence.train_real_detector --out msdm/assets/real_frame_detector.safetensors \\
        [--vae runs/msdm_vae_kvasir_seg/version_0/checkpoints/last.ckpt]

1. reads the frames and masks of ``--train`` (default ``../shared/data/kvasir-seg-extra``) at 64 px and the hand
   labels of the box artefact and text (``--labels``, default ``msdm/assets/kvasir_seg_overlay_labels.csv``;
   frames labelled neither way do not train those heads); a seeded 10 % of these frames is held out for calibration;
2. trains :class:`~msdm.metrics.adherence.real_frame_net.RealFrameNet` (mask: BCE + Dice; box, text: BCE) with the
   degradations of generated images (:func:`msdm.synthetic.train_polyp_detector.augment`);
3. calibrates the box / text thresholds (accuracy) and the mask threshold (mean accuracy of count, size and cells) on
   the held-out train frames, and scores every fact on ``--test`` (default ``../shared/data/kvasir-seg``, never
   seen) at 64 and 128 px, and with ``--vae`` on their reconstructions by that VAE;
4. writes the weights (float16, < 1 MB), thresholds and measured accuracies into one safetensors file.

The same seed gives the same file on the same machine and thread count (``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from msdm.data.splits import split_ids
from msdm.facts.table import facts_table, list_frames, read_overlay_labels
from msdm.facts.vocabulary import LOCATIONS
from msdm.metrics.adherence.real_detector import (
    RealFrameDetector,
    load_frames,
    predicted_mask_facts,
    score_real_detector,
)
from msdm.metrics.adherence.real_frame_net import (
    INPUT_SIZE,
    RealFrameModel,
    RealFrameNet,
    save_real_frame_model,
    to_input,
)
from msdm.synthetic.train_polyp_detector import augment

DEFAULT_LABELS = "msdm/assets/kvasir_seg_overlay_labels.csv"


def read_labels(path: str | Path) -> dict[str, tuple[bool | None, bool | None]]:
    """``{"<folder>/<stem>": (box, text)}`` (:func:`msdm.facts.table.read_overlay_labels`)."""
    return read_overlay_labels(path)


def load_set(folder: str, labels: dict) -> dict:
    """Frames, 64 px images and masks, facts and labels of an image + mask folder."""
    name = Path(folder).resolve().name
    table = facts_table(folder)
    frames = [(f"{name}/{stem}", image, table[stem]) for stem, image, _ in list_frames(folder)]
    masks = [m for _, _, m in list_frames(folder)]
    from msdm.facts.frames import read_mask

    soft = np.stack([np.asarray(read_mask(m)).astype(np.float32) for m in masks])  # full-res, then area-average
    soft = F.adaptive_avg_pool2d(torch.from_numpy(soft)[:, None], INPUT_SIZE)[:, 0]
    lab = [labels.get(fid, (None, None)) for fid, _, _ in frames]
    return {"frames": frames, "masks": masks, "images": load_frames(frames, INPUT_SIZE), "mask": soft,
            "box": torch.tensor([np.nan if b is None else float(b) for b, _ in lab]),
            "text": torch.tensor([np.nan if t is None else float(t) for _, t in lab])}


def _masked_bce(logits: torch.Tensor, target: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """BCE over the labelled entries (NaN: no label); ``balanced``: both classes weigh the same (text: 9 of 10
    frames show it, and an unweighted loss learns "always text")."""
    keep = ~torch.isnan(target)
    if not keep.any():
        return logits.sum() * 0
    y = target[keep]
    weight = None
    if balanced:
        pos = y.mean().clamp(0.05, 0.95)
        weight = torch.where(y > 0.5, 0.5 / pos, 0.5 / (1 - pos))
    return F.binary_cross_entropy_with_logits(logits[keep], y, weight=weight)


def loss_fn(out: dict, mask: torch.Tensor, box: torch.Tensor, text: torch.Tensor,
            balanced_text: bool = False) -> torch.Tensor:
    p = torch.sigmoid(out["mask"])
    dice = 1 - (2 * (p * mask).sum((1, 2)) + 1) / (p.sum((1, 2)) + mask.sum((1, 2)) + 1)
    return (F.binary_cross_entropy_with_logits(out["mask"], mask) + dice.mean()
            + _masked_bce(out["overlay"][:, 0], box) + _masked_bce(out["overlay"][:, 1], text, balanced=balanced_text))


def train(data: dict, idx: np.ndarray, epochs: int, batch_size: int, lr: float, seed: int, log=print,
          flip_p: float = 0.0, balanced_text: bool = False) -> RealFrameNet:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = RealFrameNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(idx) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    net.train()
    step, t0 = 0, time.time()
    for epoch in range(epochs):
        order = torch.from_numpy(idx)[torch.randperm(len(idx), generator=g)]
        total = 0.0
        for start in range(0, len(order), batch_size):
            b = order[start : start + batch_size]
            x, mask = augment(data["images"][b].clone(), g), data["mask"][b].clone()
            box, text = data["box"][b].clone(), data["text"][b].clone()
            # flips teach the mask head 4x the layouts; a flipped box / text is no longer "the" box / text, so the
            # overlay heads do not learn from flipped frames
            if flip_p > 0:  # (no draw at all without flips: the shipped weights were trained so)
                h, v = torch.rand(2, len(b), generator=g) < flip_p
                x[h], mask[h] = x[h].flip(-1), mask[h].flip(-1)
                x[v], mask[v] = x[v].flip(-2), mask[v].flip(-2)
                box[h | v], text[h | v] = float("nan"), float("nan")
            loss = loss_fn(net(to_input(x)), mask, box, text, balanced_text)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            step += 1
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(idx):.4f} ({time.time() - t0:.0f}s, {step} steps)")
    return net.eval()


def calibrate(model: RealFrameModel, data: dict, idx: np.ndarray) -> dict:
    """Thresholds maximising balanced accuracy on the held-out train frames: box, text; the mask threshold and ``min_rel``
    (:func:`~msdm.metrics.adherence.real_detector.predicted_mask_facts`): the mean accuracy of count, size and cells."""
    p = model.probabilities(data["images"][idx])
    out = {}
    for k in ("box", "text"):
        y = data[k][idx]
        keep = ~torch.isnan(y)
        pk, yk = p[k][keep], y[keep]
        grid = np.linspace(0.05, 0.95, 19)
        # balanced accuracy (the mean of the two classes' accuracies): 9 of 10 frames show text, and plain accuracy
        # would pick "always text"
        accs = [float(np.mean([((pk >= t) == (yk > 0.5))[yk == c].float().mean() for c in (0, 1) if (yk == c).any()]))
                for t in grid]
        out[k] = round(float(grid[int(np.argmax(accs))]), 3)
    truth = [data["frames"][i][2] for i in idx]
    best = (-1.0, 0.5, 0.0)
    for t in np.linspace(0.3, 0.7, 9):
        for min_rel in (0.0, 0.1, 0.2, 0.3, 0.5):
            scores = []
            for m, f in zip((p["mask"] >= t).numpy(), truth):
                q = predicted_mask_facts(m, min_rel)
                cells = np.mean([(c in q.polyp_locations) == (c in f.polyp_locations) for c in LOCATIONS])
                scores.append(np.mean([q.polyp_count == f.polyp_count, q.polyp_sizes == f.polyp_sizes, cells]))
            best = max(best, (float(np.mean(scores)), round(float(t), 3), min_rel))
    out["mask"], out["min_rel"] = best[1], best[2]
    return out


def score_all(det: RealFrameDetector, test: dict, labels: dict, vae_source: str | None = None) -> dict:
    """Scores on the test frames at 64 and 128 px, and on their reconstructions by ``vae_source`` (64 px)."""
    scores = {f"{r}px": score_real_detector(det, test["frames"], test["masks"], labels, resolution=r)
              for r in (64, 128)}
    if vae_source:
        from msdm.metrics.adherence import vae_reconstruct
        from msdm.models.loading import load_vae

        vae = load_vae(vae_source).eval()
        with torch.no_grad():
            scores["vae_64px"] = score_real_detector(det, test["frames"], test["masks"], labels, resolution=64,
                                                     reconstruct=lambda x: vae_reconstruct(vae, x))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msdm.metrics.adherence.train_real_detector",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="safetensors file to write (msdm/assets/real_frame_detector.safetensors)")
    parser.add_argument("--score", default=None, metavar="WEIGHTS",
                        help="train nothing: score these weights on --test (and --vae reconstructions) and print")
    parser.add_argument("--calibrate", default=None, metavar="WEIGHTS",
                        help="train nothing: calibrate these weights' thresholds again, score them and write --out")
    parser.add_argument("--flip-p", type=float, default=0.0,
                        help="flip training frames for the mask head (tried at 0.5: Dice 0.54 vs 0.58 without)")
    parser.add_argument("--balanced-text", action="store_true",
                        help="weigh text / no-text equally in the loss (tried: no better on held-out frames)")
    parser.add_argument("--train", default="../shared/data/kvasir-seg-extra", help="image + mask folder to train on")
    parser.add_argument("--test", default="../shared/data/kvasir-seg", help="image + mask folder to score on")
    parser.add_argument("--labels", default=DEFAULT_LABELS, help="hand labels of box and text (CSV file,box,text)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="train frames held out for calibration")
    parser.add_argument("--vae", default=None, help="VAE (MSDMVAEModule checkpoint or VAE folder): also score the "
                                                     "test frames' reconstructions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (results depend on it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    if not (args.out or args.score) or (args.calibrate and not args.out):
        parser.error("pass --out (train; with --calibrate WEIGHTS: recalibrate) or --score WEIGHTS (score only)")
    labels = read_labels(args.labels)
    if args.score:
        from msdm.metrics.adherence.real_frame_net import load_real_frame_model

        scores = score_all(RealFrameDetector(load_real_frame_model(args.score)), load_set(args.test, labels),
                           labels, args.vae)
        print(json.dumps({"weights": args.score, "test": args.test, "vae": args.vae, "test_scores": scores}, indent=1))
        return 0
    data = load_set(args.train, labels)
    ids = [f[0] for f in data["frames"]]
    fit_ids, cal_ids = split_ids(ids, args.val_fraction, args.seed)
    pos = {fid: i for i, fid in enumerate(ids)}
    fit_idx, cal_idx = np.array([pos[i] for i in fit_ids]), np.array([pos[i] for i in cal_ids])
    log(f"train {len(fit_idx)} frames, calibration {len(cal_idx)} frames of {args.train}")
    command = "python -m msdm.metrics.adherence.train_real_detector " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.calibrate:
        from msdm.metrics.adherence.real_frame_net import load_real_frame_model

        model = load_real_frame_model(args.calibrate)
        record = {**model.metadata, "calibrated_by": command}
        train_s = record.get("train_seconds")
    else:
        t0 = time.time()
        model = RealFrameModel(train(data, fit_idx, args.epochs, args.batch_size, args.lr, args.seed, log,
                                     args.flip_p, args.balanced_text))
        train_s = round(time.time() - t0)
        record = {"command": command}
    model.thresholds = calibrate(model, data, cal_idx)
    log(f"thresholds {model.thresholds}")

    scores = score_all(RealFrameDetector(model), load_set(args.test, labels), labels, args.vae)
    model.metadata = {
        **record,
        "train": args.train, "test": args.test, "labels": args.labels, "epochs": args.epochs, "seed": args.seed,
        "threads": args.threads, "train_frames": len(fit_idx), "calibration_frames": len(cal_idx),
        "train_seconds": train_s, "test_scores": scores,
    }
    save_real_frame_model(model, args.out)
    print(json.dumps({"thresholds": model.thresholds, "test_scores": scores}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
