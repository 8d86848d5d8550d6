"""Train, calibrate and measure the polyp detector (:mod:`msdm.synthetic.polyp_detector`) on CPU, deterministically.

    python -m msdm.synthetic.train_polyp_detector --out msdm/assets/polyp_detector.safetensors \\
        --vae /path/to/MSDMVAEModule.ckpt

1. renders ``--num-train`` scenes at 64 px from the detector's own random streams (never the generator's
   train / val / test splits), with more polyps and instruments than the default scene distribution so that every
   count and kind is well represented;
2. trains :class:`~msdm.synthetic.polyp_detector.PolypNet` with augmentation that imitates generated images: colour
   and saturation shifts, VAE-like smoothing (down to 18-48 px and back), Gaussian blur, JPEG, noise;
3. calibrates the decision thresholds on the ``val`` split of :class:`~msdm.synthetic.SyntheticGIDataset`
   (held-out renders) and, with ``--vae``, on their VAE reconstructions too (the threshold that maximises the mean
   accuracy over both), and measures every head on the ``test`` split, clean and reconstructed;
4. writes the weights (float16, < 1 MB), the thresholds and the measured accuracies into one safetensors file.

The same seed gives the same file on the same machine and thread count (``torch.use_deterministic_algorithms``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from msdm.synthetic.captions import scene_locations
from msdm.synthetic.polyp_detector import (
    INPUT_SIZE,
    PolypDetector,
    PolypNet,
    Thresholds,
    save_polyp_detector,
    scene_targets,
)
from msdm.synthetic.render import render_scene
from msdm.synthetic.scene import INSTRUMENTS, LOCATIONS, POLYP_SIZES, SceneDistribution, sample_attributes

#: Training scenes: more polyps and instruments than the data's default (every count and kind well represented).
TRAIN_DISTRIBUTION = SceneDistribution(
    p_gastroscopy=0.35, polyp_count_weights=(0.25, 0.3, 0.25, 0.2), instrument_count_weights=(0.45, 0.45, 0.1)
)
_TRAIN_STREAM = 7  # SeedSequence spawn key of the detector's training scenes (the datasets use 0-2 for splits)


# =====================================================================================================================
# Data
# =====================================================================================================================


def _stack(items: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def render_training_set(n: int, seed: int = 0, size: int = INPUT_SIZE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` training scenes: uint8 images [n, size, size, 3] and stacked :func:`scene_targets`."""
    images, targets = [], []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TRAIN_STREAM, i)))
        attrs = sample_attributes(rng, TRAIN_DISTRIBUTION)
        img, masks = render_scene(attrs, size, rng)
        images.append(np.asarray(img))
        targets.append(scene_targets(attrs, masks, scene_locations(attrs)))
    return np.stack(images), _stack(targets)


def render_split(n: int, split: str, seed: int = 0, size: int = INPUT_SIZE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first ``n`` scenes of a :class:`~msdm.synthetic.SyntheticGIDataset` split (default distribution),
    with their targets: the held-out renders the detector is calibrated (``val``) and measured (``test``) on."""
    from msdm.synthetic import SyntheticGIDataset

    ds = SyntheticGIDataset(n, size, seed, split, cache=False)
    images, targets = [], []
    for i in range(n):
        rng = ds._rng(i, 0)  # the dataset's own stream: the same scene it serves as sample i
        attrs = sample_attributes(rng, ds.distribution)
        img, masks = render_scene(attrs, size, rng)
        images.append(np.asarray(img))
        targets.append(scene_targets(attrs, masks, scene_locations(attrs)))
    return np.stack(images), _stack(targets)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


# =====================================================================================================================
# Augmentation: what generated images do to a render
# =====================================================================================================================


def _rand(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] with a per-image ``sigma`` [B] (reflect padding; sigma 0 = none)."""
    b, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (offsets[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x)  # [B * C, 2r + 1]
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of one float image [3, H, W] in [0, 1]."""
    pixels = (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=int(quality))
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()).permute(2, 0, 1).float() / 255


_BOTTLENECKS = (18, 24, 32, 40, 48)  # VAE-like smoothing: side of the low-resolution bottleneck


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random degradations of float images [B, 3, H, W] in [0, 1], drawn per image (geometry untouched: the labels
    hold): colour and saturation shifts (VAE reconstructions shift hues, e.g. instruments to cyan), a low-resolution
    bottleneck (p 0.5), Gaussian blur (p 0.35, sigma 0.4-1.3 px), JPEG (p 0.3, quality 30-90), noise (p 0.5)."""
    b, _, h, w = x.shape
    gray = x.mean(1, keepdim=True)
    sat = _rand(g, 0.6, 1.35, b, 1, 1, 1)
    x = ((gray + sat * (x - gray)) * _rand(g, 0.88, 1.12, b, 3, 1, 1) * _rand(g, 0.8, 1.15, b, 1, 1, 1)).clamp(0, 1)
    u = torch.rand(4, b, generator=g)
    which = torch.randint(len(_BOTTLENECKS), (b,), generator=g)
    for j, s in enumerate(_BOTTLENECKS):
        idx = ((u[0] < 0.5) & (which == j)).nonzero().flatten()
        if len(idx):
            small = F.interpolate(x[idx], size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            x[idx] = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    sigma = torch.where(u[1] < 0.35, _rand(g, 0.4, 1.3, b), torch.zeros(b))
    x = gaussian_blur(x, sigma)
    quality = torch.randint(30, 91, (b,), generator=g)
    for i in (u[2] < 0.3).nonzero().flatten().tolist():
        x[i] = jpeg(x[i], int(quality[i]))
    noise = torch.where(u[3] < 0.5, _rand(g, 0.0, 0.05, b), torch.zeros(b))
    return (x + noise[:, None, None, None] * torch.randn(x.shape, generator=g)).clamp(0, 1)


# =====================================================================================================================
# Training
# =====================================================================================================================


def detector_loss(logits: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> torch.Tensor:
    has_polyp = (t["count"] > 0).float()
    bce = F.binary_cross_entropy_with_logits
    size_loss = (bce(logits["sizes"], t["sizes"], reduction="none").mean(1) * has_polyp).sum() / has_polyp.sum().clamp(
        min=1)
    return (
        F.cross_entropy(logits["count"], t["count"])
        + size_loss
        + bce(logits["cells"], t["cells"])
        + bce(logits["seg"], t["seg"])
        + bce(logits["kinds"], t["kinds"])
        + 0.5 * bce(logits["procedure"], t["procedure"])
    )


def train(images: np.ndarray, targets: dict[str, np.ndarray], epochs: int = 6, batch_size: int = 64,
          lr: float = 3e-3, seed: int = 0, log=print) -> PolypNet:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = PolypNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    n = len(images)
    steps = epochs * (n // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    x_all = to_float(images)
    t_all = {k: torch.from_numpy(v) for k, v in targets.items()}
    step, t0 = 0, time.perf_counter()
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        running = 0.0
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            x = augment(x_all[idx], g) * 2 - 1
            loss = detector_loss(net(x), {k: v[idx] for k, v in t_all.items()})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            running += float(loss.detach())
        log(f"epoch {epoch + 1}/{epochs}: loss {running / (n // batch_size):.4f} "
            f"({time.perf_counter() - t0:.0f} s, {step} steps)")
    return net.eval()


# =====================================================================================================================
# Calibration and measurement
# =====================================================================================================================

_GRID = np.round(np.arange(0.1, 0.91, 0.05), 2)


def head_accuracy(decisions: dict[str, torch.Tensor], targets: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-head accuracy of :meth:`PolypDetector.decide` output against :func:`scene_targets`:
    ``polyp`` (presence), ``polyp_count`` (exact), ``polyp_size`` / ``polyp_location`` (exact set; images with a
    polyp), ``polyp_location_cells`` (per cell; images with a polyp), ``instrument_kind`` (exact set; images with an
    instrument), ``procedure``."""
    count = torch.from_numpy(targets["count"])
    has = count > 0
    kinds_t = torch.from_numpy(targets["kinds"]).bool()
    has_i = kinds_t.any(1)
    sizes_t, cells_t = torch.from_numpy(targets["sizes"]).bool(), torch.from_numpy(targets["cells"]).bool()
    res = {
        "polyp": (decisions["polyp"] == has).float().mean(),
        "polyp_count": (decisions["polyp_count"] == count).float().mean(),
        "polyp_size": (decisions["polyp_sizes"][has] == sizes_t[has]).all(1).float().mean(),
        "polyp_location": (decisions["polyp_cells"][has] == cells_t[has]).all(1).float().mean(),
        "polyp_location_cells": (decisions["polyp_cells"][has] == cells_t[has]).float().mean(),
        "instrument_kind": (decisions["instrument_kinds"][has_i] == kinds_t[has_i]).all(1).float().mean(),
        "procedure": (decisions["gastroscopy"] == torch.from_numpy(targets["procedure"]).bool()).float().mean(),
    }
    return {k: round(float(v), 4) for k, v in res.items()}


_CALIBRATED = {"polyp": "polyp", "sizes": "polyp_size", "cells": "polyp_location", "kinds": "instrument_kind",
               "procedure": "procedure"}


def calibrate(detector: PolypDetector, probs: list[dict[str, torch.Tensor]], targets: list[dict]) -> Thresholds:
    """Each threshold on a grid, maximising its head's accuracy averaged over the calibration sets."""
    best = Thresholds()
    for field_name, metric in _CALIBRATED.items():
        scores = []
        for thr in _GRID:
            detector.thresholds = Thresholds(**{**best.__dict__, field_name: float(thr)})
            scores.append(np.mean([head_accuracy(detector.decide(p), t)[metric] for p, t in zip(probs, targets)]))
        best = Thresholds(**{**best.__dict__, field_name: float(_GRID[int(np.argmax(scores))])})
    detector.thresholds = best
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m msdm.synthetic.train_polyp_detector", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="safetensors file to write (msdm/assets/polyp_detector.safetensors)")
    parser.add_argument("--num-train", type=int, default=10000, help="training renders (default 10000)")
    parser.add_argument("--epochs", type=int, default=14,
                        help="passes over the training renders (default 14: the shipped weights)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-val", type=int, default=800, help="held-out renders for calibration (val split)")
    parser.add_argument("--num-test", type=int, default=1000, help="held-out renders for the report (test split)")
    parser.add_argument("--vae", default=None, help="VAE (MSDMVAEModule checkpoint, VAE or pipeline folder) whose "
                        "reconstructions also calibrate the thresholds and are measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (results depend on it; 1 is fastest on a busy 2-core machine)")
    parser.add_argument("--cache", default=None, help="npz file caching the training renders (re-used when present)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", flush=True)  # noqa: E731

    if args.cache and __import__("os").path.exists(args.cache):
        data = np.load(args.cache)
        images, targets = data["images"], {k[2:]: data[k] for k in data.files if k.startswith("t_")}
    else:
        log(f"rendering {args.num_train} training scenes")
        images, targets = render_training_set(args.num_train, args.seed)
        if args.cache:
            np.savez(args.cache, images=images, **{f"t_{k}": v for k, v in targets.items()})
    images, targets = images[: args.num_train], {k: v[: args.num_train] for k, v in targets.items()}
    log(f"rendering {args.num_val} val + {args.num_test} test scenes")
    val_x, val_t = render_split(args.num_val, "val")
    test_x, test_t = render_split(args.num_test, "test")

    log(f"training on {len(images)} renders, {args.epochs} epochs")
    net = train(images, targets, args.epochs, args.batch_size, args.lr, args.seed, log)
    detector = PolypDetector(net)

    sets = {"renders": (to_float(val_x), to_float(test_x))}
    vae_name = None
    if args.vae:
        from msdm.models.loading import load_vae
        from msdm.models.vae import reconstruct_images as vae_reconstruct

        vae = load_vae(args.vae).eval()
        vae_name = str(args.vae)
        sets["vae_reconstructions"] = tuple(vae_reconstruct(vae, x) for x in sets["renders"])
        log(f"reconstructed the held-out renders with {vae_name}")
    val_probs = [detector.probabilities(v[0]) for v in sets.values()]
    thresholds = calibrate(detector, val_probs, [val_t] * len(val_probs))
    log(f"thresholds: {thresholds}")
    accuracy = {name: head_accuracy(detector.predict(v[1]), test_t) for name, v in sets.items()}
    for name, acc in accuracy.items():
        log(f"test {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))

    detector.metadata = {
        "command": "python -m msdm.synthetic.train_polyp_detector " + " ".join(sys.argv[1:] if argv is None else argv),
        "num_train": len(images), "epochs": args.epochs, "seed": args.seed, "threads": args.threads,
        "calibration": f"SyntheticGIDataset(split='val', seed=0)[:{args.num_val}] renders"
                       + (f" and their reconstructions by {vae_name}" if vae_name else ""),
        "test": f"SyntheticGIDataset(split='test', seed=0)[:{args.num_test}]",
        "test_accuracy": accuracy,
        "labels": {"sizes": list(POLYP_SIZES), "cells": list(LOCATIONS), "kinds": list(INSTRUMENTS)},
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    save_polyp_detector(detector, args.out)
    log(f"wrote {args.out}")
    print(json.dumps(detector.metadata, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
