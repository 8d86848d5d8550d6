"""How well the adherence detectors read renders and VAE reconstructions of renders, and what a VAE keeps.

    python bench/detector_calibration.py --vae runs/qs_base/vae/checkpoints/last.ckpt [--num-val 800 --num-test 1000]

On held-out scenes of the synthetic data (``val`` split: calibration, ``test`` split: report; the polyp detector
never saw either), clean and reconstructed by the VAE (posterior mean):

1. accuracy of every detector head (pixel detectors: box, text, instrument; polyp CNN: presence, count, size set,
   location set and per cell, instrument kinds, procedure) with the shipped thresholds;
2. for the pixel detectors, the threshold that maximises the mean accuracy over val renders and val
   reconstructions (ties: the one nearest the detector function's default), and the test accuracy it gives next
   to the default's (is the default still right on reconstructions?);
3. the VAE check (:func:`msdm.metrics.adherence.detector_agreement`): per attribute, how often the verdict on the
   reconstruction equals the verdict on the input, and how often each fires on inputs vs reconstructions.

Prints tables and writes a JSON (``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# detector: (its function in msdm.synthetic.pixel_detectors, the threshold argument, candidate thresholds)
PIXEL = {
    "box": ("has_box_artefact", "min_dark_or_green", np.round(np.arange(0.3, 0.96, 0.05), 2)),
    "text": ("has_text_overlay", "min_fraction", np.round(np.arange(0.005, 0.08, 0.005), 3)),
    "instrument": ("has_instrument", "min_fraction",
                   np.round([0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02], 4)),
}


def function_default(function: str, argument: str) -> float:
    """The threshold a pixel detector function uses when called without one."""
    import inspect

    from msdm.metrics import detectors

    return float(inspect.signature(getattr(detectors, function)).parameters[argument].default)


def pixel_scores(images: torch.Tensor) -> dict[str, np.ndarray]:
    from msdm.metrics import detectors

    arrays = images.permute(0, 2, 3, 1).numpy()
    box = np.array([detectors.box_artefact_score(a) for a in arrays])
    return {"box": box[:, 0], "box_green": box[:, 1],
            "text": np.array([detectors.text_overlay_score(a) for a in arrays]),
            "instrument": np.array([detectors.instrument_score(a) for a in arrays])}


def pixel_truth(targets: dict, boxes: np.ndarray, texts: np.ndarray) -> dict[str, np.ndarray]:
    return {"box": boxes, "text": texts, "instrument": targets["kinds"].any(1)}


def _split_truth(n: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    from msdm.synthetic import SyntheticGIDataset

    ds = SyntheticGIDataset(n, 64, 0, split)
    info = [ds.scene(i)[2] for i in range(n)]
    return np.array([i["box_artefact"] for i in info]), np.array([i["has_text"] for i in info])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", required=True, help="MSDMVAEModule checkpoint, VAE folder or pipeline folder")
    parser.add_argument("--num-val", type=int, default=800)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="detector_calibration.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from msdm.io import write_json
    from msdm.metrics.adherence import PixelThresholds, SceneDetector, detector_agreement, vae_reconstruct
    from msdm.models.loading import load_vae
    from msdm.synthetic.train_polyp_detector import head_accuracy, render_split, to_float

    t0 = time.perf_counter()
    vae = load_vae(args.vae).eval()
    data = {}
    for split, n in (("val", args.num_val), ("test", args.num_test)):
        x, t = render_split(n, split)
        clean = to_float(x)
        data[split] = {"targets": t, "truth": _split_truth(n, split),
                       "renders": clean, "reconstructions": vae_reconstruct(vae, clean)}
    print(f"rendered and reconstructed {args.num_val} val + {args.num_test} test scenes in "
          f"{time.perf_counter() - t0:.0f} s (VAE: {args.vae})\n")

    detector = SceneDetector()
    result: dict = {"vae": str(args.vae), "num_val": args.num_val, "num_test": args.num_test}

    # 1. every head at the shipped thresholds, on test renders and test reconstructions
    heads = {}
    for kind in ("renders", "reconstructions"):
        d = data["test"]
        acc = head_accuracy(detector.polyp_detector.predict(d[kind]), d["targets"])
        scores = pixel_scores(d[kind])
        th = detector.pixel_thresholds
        truth = pixel_truth(d["targets"], *d["truth"])
        acc["box"] = float(np.mean(((scores["box"] >= th.box_dark_or_green) & (scores["box_green"] >= th.box_green))
                                   == truth["box"]))
        acc["text"] = float(np.mean((scores["text"] >= th.text) == truth["text"]))
        acc["instrument"] = float(np.mean((scores["instrument"] >= th.instrument) == truth["instrument"]))
        heads[kind] = acc
    result["accuracy"] = heads
    names = ["box", "text", "instrument", "polyp", "polyp_count", "polyp_size", "polyp_location",
             "polyp_location_cells", "instrument_kind", "procedure"]
    print(f"{'head':<22}{'renders':>10}{'reconstr.':>11}   (test split, shipped thresholds)")
    for name in names:
        print(f"{name:<22}{heads['renders'][name]:>10.3f}{heads['reconstructions'][name]:>11.3f}")

    # 2. pixel thresholds re-calibrated on val renders + val reconstructions
    print(f"\n{'pixel detector':<16}{'default':>9}{'best':>9}{'SceneDet.':>10}{'test renders':>14}"
          f"{'test reconstr.':>16}")
    calib = {}
    defaults = PixelThresholds()
    scores = {(split, kind): pixel_scores(data[split][kind]) for split in data for kind in ("renders", "reconstructions")}
    truths = {split: pixel_truth(data[split]["targets"], *data[split]["truth"]) for split in data}
    shipped = {"box": defaults.box_dark_or_green, "text": defaults.text, "instrument": defaults.instrument}
    for det, (function, argument, grid) in PIXEL.items():
        def acc_at(split, kind, thr, det=det):
            s = scores[(split, kind)]
            fire = s[det] >= thr
            if det == "box":
                fire &= s["box_green"] >= defaults.box_green
            return float(np.mean(fire == truths[split][det]))

        default = function_default(function, argument)
        grid = np.union1d(grid, [default])
        val_scores = np.array([np.mean([acc_at("val", k, thr) for k in ("renders", "reconstructions")]) for thr in grid])
        # among the best thresholds, the one nearest the default (a flat curve keeps the default)
        tied = grid[val_scores >= val_scores.max() - 1e-12]
        best = float(tied[np.argmin(np.abs(tied - default))])
        calib[det] = {"default": default, "best": best, "scene_detector": shipped[det],
                      "test_default": {k: acc_at("test", k, default) for k in ("renders", "reconstructions")},
                      "test_best": {k: acc_at("test", k, best) for k in ("renders", "reconstructions")}}
        c = calib[det]
        print(f"{det:<16}{default:>9g}{best:>9g}{shipped[det]:>10g}"
              f"{c['test_default']['renders']:>7.3f}/{c['test_best']['renders']:.3f}"
              f"{c['test_default']['reconstructions']:>9.3f}/{c['test_best']['reconstructions']:.3f}")
    print("(default: the detector function's; best: calibrated here; SceneDet.: what SceneDetector uses; test "
          "accuracy: at the default / at the best threshold)")
    result["pixel_calibration"] = calib

    # 3. what the VAE keeps
    agreement = detector_agreement(data["test"]["renders"], data["test"]["reconstructions"], detector)
    result["agreement"] = agreement
    print(f"\n{'attribute':<18}{'agreement':>10}{'fires on inputs':>17}{'on reconstr.':>14}")
    for attr, r in agreement.items():
        rates = (f"{r['rate_inputs']:>17.3f}{r['rate_reconstructions']:>14.3f}" if "rate_inputs" in r else "")
        print(f"{attr:<18}{r['agreement']:>10.3f}{rates}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(f"\nwritten: {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
