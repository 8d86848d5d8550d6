"""ROCOv2DataModule: local release layout and HF layout, official splits, grayscale to 3 or 1 channels, padding."""

import csv

import numpy as np
import torch

from datamodules.rocov2 import ROCOv2DataModule
from tests.data_fixtures import *  # noqa: F403 (session fixtures: local copies of each source)

RES = 32


def _splits(dm):
    return [len(dm.train_dataset), dm.report["val_images"], dm.report["test_images"]]


def test_local_layout_official_splits_and_batches(roco_local):
    dm = ROCOv2DataModule(data=str(roco_local), resolution=RES, batch_size=5)
    dm.setup("fit")
    assert _splits(dm) == [40, 10, 10] and dm.report["skipped_total"] == 0
    b = next(iter(dm.train_dataloader()))
    assert b["pixel_values"].shape == (5, 3, RES, RES) and -1 <= b["pixel_values"].min() <= b["pixel_values"].max() <= 1
    assert all(i.startswith("ROCOv2_2023_train_") for i in b["id"])
    t = next(iter(dm.test_dataloader()))
    assert all(i.startswith("ROCOv2_2023_test_") for i in t["id"])
    captions = {row[0]: row[1] for row in csv.reader(open(roco_local / "valid_captions.csv"))}
    v = next(iter(dm.val_dataloader()))
    assert all(captions[i] == c for i, c in zip(v["id"], v["caption"]))


def test_hf_layout_matches_the_local_layout(roco_hf, roco_local):
    dm = ROCOv2DataModule(data=str(roco_hf), resolution=RES, batch_size=5)
    dm.setup("fit")
    assert _splits(dm) == [40, 10, 10]
    local = ROCOv2DataModule(data=str(roco_local), resolution=RES)
    local.setup("fit")
    a, b = dm.val_dataset[3], local.val_dataset[3]
    assert a["id"] == b["id"] and a["caption"] == b["caption"]
    assert torch.equal(a["pixel_values"], b["pixel_values"])  # same pixels from bytes as from files


def test_one_channel_and_three_channel_grayscale(roco_local, roco_dir):
    rows = list(csv.DictReader(open(roco_dir / "captions.csv")))
    dm1 = ROCOv2DataModule(data=str(roco_local), resolution=RES, channels=1, batch_size=8)
    dm1.setup("fit")
    b = next(iter(dm1.train_dataloader()))
    assert b["pixel_values"].shape == (8, 1, RES, RES)
    dm3 = ROCOv2DataModule(data=str(roco_local), resolution=RES, channels=3)
    dm3.setup("fit")
    # training records are in table order (rows[0..39]); for a grayscale source the 3 channels are equal copies
    gray_idx = next(k for k in range(40) if rows[k]["mode"] == "L")
    x3 = dm3.train_dataset[gray_idx]["pixel_values"]
    x1 = dm1.train_dataset[gray_idx]["pixel_values"]
    assert torch.equal(x3[0], x3[1]) and torch.equal(x3[1], x3[2]) and torch.equal(x3[0], x1[0])


def test_pad_keeps_the_whole_figure(roco_local, roco_dir):
    rows = list(csv.DictReader(open(roco_dir / "captions.csv")))
    k = max(range(40), key=lambda i: int(rows[i]["width"]) / int(rows[i]["height"]))  # the widest training figure
    w, h = int(rows[k]["width"]), int(rows[k]["height"])
    assert w > 1.2 * h
    dm = ROCOv2DataModule(data=str(roco_local), resolution=64)
    dm.setup("fit")
    x = dm.train_dataset[k]["pixel_values"]
    band = round((64 - 64 * h / w) / 2) - 1
    assert (x[:, :band] == -1).all() and (x[:, -band:] == -1).all()  # black letterbox above and below
    crop = ROCOv2DataModule(data=str(roco_local), resolution=64, aspect="crop")
    crop.setup("fit")
    assert not np.allclose(crop.train_dataset[k]["pixel_values"].numpy(), x.numpy())
