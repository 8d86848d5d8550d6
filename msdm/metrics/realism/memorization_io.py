"""Files of a memorization report: the per-image CSV, the summary JSON and a gallery PNG of the closest pairs.

The gallery shows, row by row, a generated image next to its nearest training frame (the pixel view's frame, with
the flip that matched applied, when the pixels decided or were closest; else the feature view's), closest first,
copies first, with the SSIM, the feature distance and the verdict under each pair — what a reviewer looks at before
sharing a synthetic set.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

from msdm.io import atomic_file, write_json
from msdm.metrics.realism.memorization import DEFAULT_ALPHA, FLIPS, MemorizationResult

__all__ = ["closest_rows", "write_csv", "write_gallery", "write_report", "source_thumbnails", "copy_fraction_figure",
           "memorization_of_images"]

CSV_COLUMNS = ["generated", "copy", "copy_by_features", "copy_by_pixels", "ssim", "nearest_train_pixels", "flip", "crop",
               "feature_distance", "second_feature_distance", "nn_ratio", "nearest_train_features"]


def closest_rows(result: MemorizationResult, num: int) -> list[int]:
    """Row indices of the ``num`` closest pairs: copies first, then by SSIM (highest first)."""
    order = sorted(range(len(result.rows)), key=lambda i: (not result.rows[i]["copy"], -result.rows[i]["ssim"],
                                                           result.rows[i]["feature_distance"]))
    return order[:num]


def write_csv(result: MemorizationResult, path: str | os.PathLike) -> None:
    with atomic_file(path, "w") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in result.rows:
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in CSV_COLUMNS})


def _flip(im, flip: str):
    from PIL import Image

    if "h" in flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if "v" in flip:
        im = im.transpose(Image.FLIP_TOP_BOTTOM)
    return im


def write_gallery(result: MemorizationResult, path: str | os.PathLike, load_generated: Callable[[str], object],
                  load_train: Callable[[str], object], num_pairs: int = 16, tile: int = 128, columns: int = 2) -> None:
    """A PNG grid of the closest pairs; ``load_*``: id → PIL image (or anything ``to_uint8_images`` takes)."""
    from PIL import Image, ImageDraw

    from msdm.metrics.realism.features import to_uint8_images

    rows = closest_rows(result, num_pairs)
    label_h, pad = 26, 6
    cell_w, cell_h = 2 * tile + pad, tile + label_h
    n_grid_rows = max(1, -(-len(rows) // columns))
    sheet = Image.new("RGB", (columns * cell_w + (columns - 1) * 2 * pad, n_grid_rows * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(rows):
        r = result.rows[i]
        use_pixels = r["copy_by_pixels"] or not r["copy_by_features"]
        train_id = r["nearest_train_pixels"] if use_pixels else r["nearest_train_features"]
        gen = Image.fromarray(to_uint8_images(load_generated(r["generated"]))[0]).resize((tile, tile))
        train = Image.fromarray(to_uint8_images(load_train(train_id))[0])
        train = _flip(train, r["flip"] if use_pixels else "none").resize((tile, tile))
        x0 = (k % columns) * (cell_w + 2 * pad)
        y0 = (k // columns) * (cell_h + pad)
        sheet.paste(gen, (x0, y0))
        sheet.paste(train, (x0 + tile + pad, y0))
        verdict = "COPY" if r["copy"] else "ok"
        flip = f" flip {r['flip']}" if use_pixels and r["flip"] != FLIPS[0] else ""
        draw.text((x0, y0 + tile + 1), f"{verdict}  ssim {r['ssim']:.2f}  dist {r['feature_distance']:.3f}{flip}",
                  fill="red" if r["copy"] else "black")
        draw.text((x0, y0 + tile + 13), f"{r['generated'][:18]} | {train_id[:18]}", fill="gray")
    with atomic_file(path, "wb") as f:
        sheet.save(f, format="PNG")


def write_report(result: MemorizationResult, out_dir: str | os.PathLike, load_generated, load_train,
                 num_pairs: int = 16, extra: dict | None = None) -> dict[str, Path]:
    """``memorization.csv``, ``memorization.json`` and ``memorization.png`` in ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "memorization.csv", "json": out / "memorization.json", "gallery": out / "memorization.png"}
    write_csv(result, paths["csv"])
    write_json(paths["json"], {**result.summary(), **(extra or {})})
    write_gallery(result, paths["gallery"], load_generated, load_train, num_pairs)
    return paths



def source_thumbnails(source, size: int = 64, batch_size: int = 64):
    """Luma thumbnails ``[N, size, size]`` of a real-image source (RealImageFolder / RealImageDataset), in its id
    order, and ``{id: PIL image loader}`` for the gallery."""
    import torch

    from msdm.metrics.realism.memorization import luma_thumbnails

    thumbs = [luma_thumbnails(images, size) for _, images in source.iter_batches(batch_size)]
    return torch.cat(thumbs) if thumbs else torch.zeros(0, size, size)


def _source_image(source, image_id: str):
    paths = getattr(source, "paths", None)
    if paths is not None:
        return paths[list(source.ids).index(image_id)]
    row = source.rows[list(source.ids).index(image_id)]
    return source.dataset[row][source.image_column].convert("RGB")


def copy_fraction_figure(result: MemorizationResult) -> dict:
    """The copy fraction as one of :func:`msdm.metrics.realism.figures.realism_figures`' entries (n + interval)."""
    s = result.summary()
    return {"value": result.copy_fraction, "interval": result.interval, "n_train": result.n_train,
            "n_generated": result.n_generated, "n_calibration": s["n_calibration"], "alpha": s["alpha"],
            "calibration": s["calibration"], "calibration_flagged": s["calibration_flagged"]}


def memorization_of_images(gen_paths, gen_features, train_source, extractor, calibration_source=None,
                           cache_dir=None, batch_size: int = 32, alpha: float = DEFAULT_ALPHA, size: int = 64,
                           out_dir: str | os.PathLike | None = None, num_pairs: int = 16):
    """The memorization report of generated image files (with their ``extractor`` features ``[n, d]``, the same
    extractor as FID's) against a training-image source; the threshold is calibrated on ``calibration_source``
    (held-out real frames the generator never saw) or, without it, leave-one-out on the training frames. Writes
    the CSV, JSON and gallery into ``out_dir`` when given. Returns ``(result, paths or None)``."""
    import numpy as np

    from msdm.metrics.realism.evaluate import real_features
    from msdm.metrics.realism.memorization import luma_thumbnails, memorization_report

    def feats_and_thumbs(src, what):
        by_id, _ = real_features(src, extractor, cache_dir, batch_size, desc=f"{extractor.name} features ({what})")
        return np.stack([by_id[i] for i in src.ids]), source_thumbnails(src, size)

    train_f, train_t = feats_and_thumbs(train_source, "training frames")
    cal_f, cal_t = feats_and_thumbs(calibration_source, "calibration frames") if calibration_source else (None, None)
    gen_paths = [Path(p) for p in gen_paths]
    result = memorization_report(gen_features, luma_thumbnails(gen_paths, size), train_f, train_t, cal_f, cal_t,
                                 alpha=alpha, gen_ids=[p.name for p in gen_paths], train_ids=list(train_source.ids))
    if out_dir is None:
        return result, None
    by_name = {p.name: p for p in gen_paths}
    extra = {"train": train_source.describe(),
             "calibration_images": calibration_source.describe() if calibration_source else None}
    paths = write_report(result, out_dir, by_name.__getitem__, lambda i: _source_image(train_source, i), num_pairs,
                         extra)
    return result, paths
