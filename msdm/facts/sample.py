"""The Kvasir-SEG sample shipped in the package: 698 real colonoscopy frames with polyp masks at 64 px.

``msdm quickstart`` trains on it by default (no download, no data folder). Layout (``msdm/assets/kvasir_seg_64/``):
``kvasir-seg/`` (150 frames) and ``kvasir-seg-extra/`` (548), each ``images/<stem>.jpg`` (64 x 64, JPEG quality 90)
and ``masks/<stem>.png`` (1-bit), i.e. the Kvasir-SEG layout every msdm reader takes
(:func:`msdm.facts.table.frames_of`, ``FactCaptionDataModule``), plus ``facts.csv``: the facts of the full-size
(256 px) masks, which :func:`sample_frames` uses, so captions are the ones ``bench/real_kvasir.py`` trains on (the
64 px masks give the same polyp count for 697 of the 698 frames, size class 695, location cells 658: a cell's 10 %
coverage moves at 64 px); ``ATTRIBUTION.md`` (CC BY 4.0: Jha et al. 2020;
Borgli et al. 2020). The hand labels of box and text are ``msdm/assets/kvasir_seg_overlay_labels.csv``.

The frames are those of ``../shared/data/kvasir-seg`` and ``kvasir-seg-extra`` (256 px), reduced as msdm's frame
dataset reduces them (:func:`msdm.data.transforms.to_square`, bilinear); a mask is reduced by area averaging and
thresholded at one half. Folder names and file stems are kept, so frame ids (``<folder>/<stem>``) and therefore
the held-out split (:func:`sample_split`: :func:`msdm.data.splits.heldout_split`, 200 frames) are the same as
``bench/real_kvasir.py``'s on the full-size folders. Rebuild with::

    python -m msdm.facts.sample --out msdm/assets/kvasir_seg_64 ../shared/data/kvasir-seg ../shared/data/kvasir-seg-extra
"""

from __future__ import annotations

import argparse
import os
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from msdm.data.splits import heldout_split
from msdm.facts.table import facts_from_csv, list_frames, read_overlay_labels, with_overlay_labels, write_facts_csv

__all__ = ["SAMPLE_NAME", "SAMPLE_FOLDERS", "SAMPLE_RESOLUTION", "N_HELDOUT", "sample_root", "sample_folders",
           "overlay_labels_path", "sample_frames", "sample_split", "build_sample"]

SAMPLE_NAME = "kvasir_seg_64"
SAMPLE_FOLDERS = ("kvasir-seg", "kvasir-seg-extra")
SAMPLE_RESOLUTION = 64
#: Held-out frames (never trained on) of the 698: the test split of the quickstart and bench/real_kvasir.py.
N_HELDOUT = 200


def _assets() -> Path:
    return Path(str(resources.files("msdm") / "assets"))


def sample_root() -> Path:
    """The packaged sample's folder (``msdm/assets/kvasir_seg_64``); a clear error if the install lacks it."""
    root = _assets() / SAMPLE_NAME
    if not all((root / f / "images").is_dir() for f in SAMPLE_FOLDERS):
        raise FileNotFoundError(f"the packaged Kvasir-SEG sample is missing from {root}: reinstall msdm (or use "
                                "msdm quickstart --data synthetic)")
    return root


def sample_folders() -> list[Path]:
    """The sample's image + mask folders (``kvasir-seg``, ``kvasir-seg-extra``)."""
    root = sample_root()
    return [root / f for f in SAMPLE_FOLDERS]


def overlay_labels_path() -> Path:
    """The hand labels of the box artefact and text of all 698 frames (docs/metrics.md, Hand labels)."""
    return _assets() / "kvasir_seg_overlay_labels.csv"


def sample_frames() -> list:
    """``[(id, image path, FrameFacts)]`` of the 698 frames (ids ``<folder>/<stem>``): the facts of each folder's
    ``facts.csv`` (from the full-size masks) with the hand labels of box and text applied."""
    labels = read_overlay_labels(overlay_labels_path())
    out = []
    for folder in sample_folders():
        facts = with_overlay_labels(facts_from_csv((folder / "facts.csv").read_text()), folder, labels)
        out += [(f"{folder.name}/{stem}", image, facts[stem]) for stem, image, _ in list_frames(folder)]
    return out


def sample_split(frames: list | None = None, n_heldout: int = N_HELDOUT, seed: int = 0) -> tuple[list, list]:
    """``(train frames, held-out frames)`` of ``frames`` (default :func:`sample_frames`): 498 and 200."""
    frames = sample_frames() if frames is None else list(frames)
    train, held = heldout_split([f[0] for f in frames], n_heldout, seed)
    return [frames[i] for i in train], [frames[i] for i in held]


def _reduce_mask(path: Path, size: int) -> Image.Image:
    m = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{path}: the sample builder takes square masks, got {m.shape[1]}x{m.shape[0]}")
    small = np.asarray(Image.fromarray(m, mode="F").resize((size, size), Image.BOX))
    return Image.fromarray(small >= 0.5).convert("1")


def build_sample(sources: list[str | os.PathLike], out: str | os.PathLike, resolution: int = SAMPLE_RESOLUTION,
                 quality: int = 90) -> dict[str, int]:
    """Write ``out/<folder name>/{images,masks,facts.csv}`` from image + mask ``sources``; returns frames per
    folder."""
    from msdm.data.transforms import to_square

    counts = {}
    for src in sources:
        name = Path(str(src)).resolve().name
        for sub in ("images", "masks"):
            (Path(out) / name / sub).mkdir(parents=True, exist_ok=True)
        frames = list_frames(src)
        for stem, image, mask in frames:
            with Image.open(image) as img:
                if img.size[0] != img.size[1]:
                    raise ValueError(f"{image}: the sample builder takes square frames, got {img.size}")
                small = to_square(img.convert("RGB"), resolution)
            small.save(Path(out) / name / "images" / f"{stem}.jpg", quality=quality, subsampling=0, optimize=True)
            _reduce_mask(mask, resolution).save(Path(out) / name / "masks" / f"{stem}.png", optimize=True)
        write_facts_csv(src, Path(out) / name / "facts.csv")  # the facts of the full-size masks
        counts[name] = len(frames)
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m msdm.facts.sample", description="build the packaged sample")
    ap.add_argument("sources", nargs="+", help="image + mask folders (Kvasir-SEG layout, square frames)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resolution", type=int, default=SAMPLE_RESOLUTION)
    ap.add_argument("--quality", type=int, default=90)
    args = ap.parse_args(argv)
    print(build_sample(args.sources, args.out, args.resolution, args.quality))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
