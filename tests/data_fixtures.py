"""Local copies of every data source, built from the real sample images in ../shared/data (never copied into the repo).

* ``kvasir_devset``: the MEDVQA-GI 2024 development layout (``prompt-gt.csv`` + ``images/``) for the 150 Kvasir-SEG
  images, with prompts derived from the masks (polyp count, the 3×3 grid cells the polyps cover) in the real
  MEDVQA-GI wording;
* ``kvasir_vqa_hf``: a ``save_to_disk`` copy shaped like ``SimulaMet-HOST/Kvasir-VQA`` (``image``, ``img_id``,
  ``question``, ``answer``, ``source``; one row per question) + a 2025-style captions JSON;
* ``medvqa_hf_parquet``: parquet shaped like ``SushantGautam/ImageCLEFmed-MEDVQA-GI-2024-Dev_mod``
  (``caption``, ``type``, ``image`` with embedded bytes; one row per prompt, no id column);
* ``roco_local``: the ROCOv2 release layout (``train/ valid/ test/`` + ``*_captions.csv`` ``ID,Caption``);
* ``roco_hf``: a ``save_to_disk`` ``DatasetDict`` shaped like ``eltorio/ROCOv2-radiology``.

Images are symlinked (folders) or embedded from the shared files; fixtures are session-scoped so each is built once.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

__all__ = ["kvasir_devset", "kvasir_vqa_hf", "medvqa_hf_parquet", "roco_local", "roco_hf"]

GRID = [["upper-left", "upper-center", "upper-right"], ["center-left", "center", "center-right"],
        ["lower-left", "lower-center", "lower-right"]]
# the order in which the real prompts list locations
LOC_ORDER = ["center", "upper-left", "upper-right", "lower-left", "lower-right", "center-left", "center-right",
             "upper-center", "lower-center"]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def mask_prompts(mask_path: Path) -> list[str]:
    """MEDVQA-GI-style prompts that are true for a Kvasir-SEG mask: polyp count and covered grid cells."""
    from scipy import ndimage

    m = np.asarray(Image.open(mask_path).convert("L")) > 127
    labels, n = ndimage.label(m)
    sizes = ndimage.sum(m, labels, range(1, n + 1)) if n else []
    n = int(sum(1 for s in sizes if s >= 0.002 * m.size))  # ignore specks
    h, w = m.shape
    cells = set()
    for r in range(3):
        for c in range(3):
            block = m[r * h // 3:(r + 1) * h // 3, c * w // 3:(c + 1) * w // 3]
            if block.mean() > 0.15:
                cells.add(GRID[r][c])
    prompts = ["Generate an image containing a polyp.", "Generate an image from a colonoscopy procedure."]
    if n:
        prompts.append(f"Generate an image with {n} polyp{'s' if n > 1 else ''}.")
    if cells:
        prompts.append(f"Generate an image with an an abnormality located in the "
                       f"{_join([c for c in LOC_ORDER if c in cells])}.")
    return prompts


def build_kvasir_devset(root: Path, kvasir_dir: Path, limit: int | None = None) -> Path:
    images = sorted((kvasir_dir / "images").glob("*.jpg"))[:limit]
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "prompt-gt.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Prompt", "Filename"])
        for img in images:
            os.symlink(img, root / "images" / img.name)
            for p in mask_prompts(kvasir_dir / "masks" / img.name):
                w.writerow([p, img.name])
    return root


def _png_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(scope="session")
def kvasir_devset(tmp_path_factory, kvasir_dir):
    return build_kvasir_devset(tmp_path_factory.mktemp("medvqa2024"), kvasir_dir)


@pytest.fixture(scope="session")
def kvasir_vqa_hf(tmp_path_factory, kvasir_dir):
    """(local HF copy path, captions JSON path, {img_id: captions}) for 24 images, 3 QA rows each."""
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    root = tmp_path_factory.mktemp("kvasir_vqa")
    images = sorted((kvasir_dir / "images").glob("*.jpg"))[:24]
    rows = {"image": [], "source": [], "question": [], "answer": [], "img_id": []}
    for img in images:
        for q, a in (("Are there any polyps?", "yes"), ("How many instruments?", "0"), ("What procedure?", "colonoscopy")):
            rows["image"].append({"bytes": img.read_bytes(), "path": img.name})
            rows["source"].append("kvasir-seg")
            rows["question"].append(q)
            rows["answer"].append(a)
            rows["img_id"].append(img.stem)
    feats = Features({"image": HFImage(), "source": Value("string"), "question": Value("string"),
                      "answer": Value("string"), "img_id": Value("string")})
    from datasets import DatasetDict

    DatasetDict({"raw": Dataset.from_dict(rows, features=feats)}).save_to_disk(str(root / "Kvasir-VQA"))
    caps = {}
    for img in images:
        ps = mask_prompts(kvasir_dir / "masks" / img.name)
        caps[img.stem] = {"prompt_a": ps[:2], "prompt_b": ps[2:]}
    (root / "kvasir-captions.json").write_text(json.dumps(caps, indent=1))
    return root / "Kvasir-VQA", root / "kvasir-captions.json", caps


@pytest.fixture(scope="session")
def medvqa_hf_parquet(tmp_path_factory, kvasir_dir):
    """Parquet like the HF dev-set copy: (caption, type, image bytes), one row per prompt, no id column."""
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    root = tmp_path_factory.mktemp("medvqa_hf")
    images = sorted((kvasir_dir / "images").glob("*.jpg"))[30:50]
    rows = {"caption": [], "type": [], "image": []}
    for img in images:
        for p in mask_prompts(kvasir_dir / "masks" / img.name):
            rows["caption"].append(p)
            rows["type"].append("prompt")
            rows["image"].append({"bytes": img.read_bytes(), "path": None})  # as pushed from PIL: no file name
    feats = Features({"caption": Value("string"), "type": Value("string"), "image": HFImage()})
    (root / "data").mkdir()
    Dataset.from_dict(rows, features=feats).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root, len(images)


def _roco_rows(roco_dir: Path):
    with open(roco_dir / "captions.csv", newline="") as f:
        return list(csv.DictReader(f))


ROCO_SPLITS = (("train", 40), ("valid", 10), ("test", 10))


@pytest.fixture(scope="session")
def roco_local(tmp_path_factory, roco_dir):
    root = tmp_path_factory.mktemp("rocov2_local")
    rows = _roco_rows(roco_dir)
    start = 0
    for split, n in ROCO_SPLITS:
        (root / split).mkdir()
        with open(root / f"{split}_captions.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ID", "Caption"])
            for i, r in enumerate(rows[start:start + n]):
                iid = f"ROCOv2_2023_{split}_{start + i:06d}"
                os.symlink(roco_dir / "images" / r["file"], root / split / f"{iid}.jpg")
                w.writerow([iid, r["caption"]])
        start += n
    return root


@pytest.fixture(scope="session")
def roco_hf(tmp_path_factory, roco_dir):
    from datasets import Dataset, DatasetDict, Features, Sequence, Value
    from datasets import Image as HFImage

    root = tmp_path_factory.mktemp("rocov2_hf")
    rows = _roco_rows(roco_dir)
    feats = Features({"image": HFImage(), "image_id": Value("string"), "caption": Value("string"),
                      "cui": Sequence(Value("string"))})
    parts, start = {}, 0
    for split, n in ROCO_SPLITS:
        sel = rows[start:start + n]
        parts["validation" if split == "valid" else split] = Dataset.from_dict({
            "image": [{"bytes": (roco_dir / "images" / r["file"]).read_bytes(), "path": r["file"]} for r in sel],
            "image_id": [f"ROCOv2_2023_{split}_{start + i:06d}" for i in range(len(sel))],
            "caption": [r["caption"] for r in sel],
            "cui": [["C1306645"] for _ in sel],
        }, features=feats)
        start += n
    DatasetDict(parts).save_to_disk(str(root / "ROCOv2-radiology"))
    return root / "ROCOv2-radiology"
