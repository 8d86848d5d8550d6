"""The Kvasir-SEG sample shipped in the package (msdm/assets/kvasir_seg_64): what msdm quickstart trains on."""

import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msdm.data.splits import heldout_split
from msdm.facts.dataset import FactFramesDataset
from msdm.facts.frames import mask_facts, read_mask
from msdm.facts.grammar import parse_prompt
from msdm.facts.sample import N_HELDOUT, overlay_labels_path, sample_folders, sample_frames, sample_split
from msdm.facts.table import list_frames, read_overlay_labels

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def frames():
    return sample_frames()


def test_sample_is_small_complete_and_attributed(frames):
    root = ROOT / "msdm" / "assets" / "kvasir_seg_64"
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 3_000_000, size
    assert len(frames) == 698 and len({f[0] for f in frames}) == 698
    assert {f[0].split("/")[0] for f in frames} == {"kvasir-seg", "kvasir-seg-extra"}
    text = (root / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in text and "Kvasir-SEG: A Segmented Polyp Dataset" in text and "Jha" in text
    labels = read_overlay_labels(overlay_labels_path())
    assert {f[0] for f in frames} == set(labels)  # every frame hand-labelled (box / text)


def test_masks_match_images(frames):
    for folder in sample_folders():
        for stem, image, mask in list_frames(folder):
            with Image.open(image) as im, Image.open(mask) as m:
                assert im.size == m.size == (64, 64) and im.mode == "RGB" and m.mode == "1", stem
    # the 64 px masks agree with the shipped facts (from the 256 px masks) on the polyp count of almost every frame
    by_id = {f[0]: f[2] for f in frames}
    agree = [mask_facts(read_mask(m)).polyp_count == by_id[f"{folder.name}/{s}"].polyp_count
             for folder in sample_folders() for s, _, m in list_frames(folder)]
    assert np.mean(agree) > 0.99


def test_split_is_fixed_disjoint_and_the_benchs(frames):
    train, held = sample_split(frames)
    assert len(train) == 698 - N_HELDOUT == 498 and len(held) == 200
    assert not {f[0] for f in train} & {f[0] for f in held}
    assert sample_split(frames) == (train, held)  # stable
    assert sample_split(list(reversed(frames)))[1] == list(reversed(held))  # depends on the ids, not their order
    # the rule, written independently: the 200 ids with the smallest crc32 of "0:<id>"
    ids = [f[0] for f in frames]
    expect = set(sorted(ids, key=lambda i: zlib.crc32(f"0:{i}".encode()))[:200])
    assert {f[0] for f in held} == expect
    assert heldout_split(ids, 200, seed=1)[1] != heldout_split(ids, 200)[1]
    with pytest.raises(ValueError):
        heldout_split(["a", "a"], 1)


def test_captions_parse_back_to_the_frames_facts(frames):
    ds = FactFramesDataset(frames, procedure="colonoscopy", fixed=True)
    for i in range(0, len(frames), 7):
        truth = frames[i][2].to_facts()
        got = parse_prompt(ds.full_caption(i))
        assert not got.get("unparsed"), ds.full_caption(i)
        assert got["polyp_count"] == truth["polyp_count"]
        for key in ("box", "text", "polyp_sizes", "polyp_locations"):
            if truth.get(key) is not None:
                assert got[key] == truth[key], (key, ds.full_caption(i))
    x = ds[0]["pixel_values"]
    assert x.shape == (3, 64, 64) and -1 <= x.min() < x.max() <= 1
