"""The synthetic colonoscopy scenes: determinism, splits, captions true to the attributes, detectors, epochs."""

import csv
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from msdm.data.epoch_sampler import EpochShuffleSampler
from msdm.synthetic import (
    CAPTION_LOCATION_ORDER,
    LOCATIONS,
    POLYP_SIZES,
    SceneAttributes,
    SyntheticGIDataset,
    captions_for,
    has_box_artefact,
    has_instrument,
    has_text_overlay,
    render_scene,
    sample_attributes,
    scene_locations,
    synthetic_collate,
)


def _scenes(n, size=64, offset=0):
    """n (attributes, image, masks) triples from independent seeds."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(offset + i)
        attrs = sample_attributes(rng)
        image, masks = render_scene(attrs, size, rng)
        out.append((attrs, image, masks))
    return out


@pytest.fixture(scope="module")
def scenes():
    return _scenes(120)


# ---------------------------------------------------------------------------------------------------------------------
# Determinism, shapes, splits
# ---------------------------------------------------------------------------------------------------------------------


def test_same_seed_same_scene_other_seed_other_scene():
    def make(seed):
        rng = np.random.default_rng(seed)
        attrs = sample_attributes(rng)
        image, masks = render_scene(attrs, 64, rng)
        return attrs, np.asarray(image), masks

    a1, img1, m1 = make(7)
    a2, img2, m2 = make(7)
    a3, img3, _ = make(8)
    assert a1 == a2 and np.array_equal(img1, img2) and np.array_equal(m1["polyp"], m2["polyp"])
    assert captions_for(a1) == captions_for(a2)
    assert a1 != a3 and not np.array_equal(img1, img3)
    assert img1.dtype == np.uint8 and img1.shape == (64, 64, 3)


def test_dataset_items_are_deterministic_and_in_range():
    ds1 = SyntheticGIDataset(num_samples=6, resolution=48, seed=3, split="train")
    ds2 = SyntheticGIDataset(num_samples=6, resolution=48, seed=3, split="train", cache=False)
    for i in range(6):
        x1, x2 = ds1[i], ds2[i]
        assert x1["pixel_values"].shape == (3, 48, 48) and x1["pixel_values"].dtype == torch.float32
        assert x1["pixel_values"].min() >= -1 and x1["pixel_values"].max() <= 1
        assert torch.equal(x1["pixel_values"], x2["pixel_values"])
        assert x1["caption"] == x2["caption"] and x1["id"] == x2["id"] and x1["attributes"] == x2["attributes"]
    # Both ends of the range are used: the black frame is exactly -1, highlights reach 1.
    x = ds1[0]["pixel_values"]
    assert x.min() == -1 and x.max() > 0.9
    with pytest.raises(IndexError):
        ds1.scene(6)


def test_train_val_test_are_disjoint():
    n = 24
    splits = {s: SyntheticGIDataset(num_samples=n, resolution=32, seed=0, split=s) for s in ("train", "val", "test")}
    ids = {s: {ds.sample_id(i) for i in range(n)} for s, ds in splits.items()}
    assert all(len(v) == n for v in ids.values())
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])
    images = {s: [ds.scene(i)[0].tobytes() for i in range(n)] for s, ds in splits.items()}
    assert len(set(images["train"]) | set(images["val"]) | set(images["test"])) == 3 * n
    # Another seed is another dataset.
    other = SyntheticGIDataset(num_samples=n, resolution=32, seed=1, split="train")
    assert not {other.scene(i)[0].tobytes() for i in range(n)} & set(images["train"])


def test_all_counts_and_overlays_occur(scenes):
    attrs = [a for a, _, _ in scenes]
    assert {len(a.polyps) for a in attrs} == {0, 1, 2, 3}
    assert {len(a.instruments) for a in attrs} >= {0, 1}
    assert {a.box_artefact for a in attrs} == {True, False} and {a.has_text for a in attrs} == {True, False}
    assert {a.procedure for a in attrs} == {"colonoscopy", "gastroscopy"}
    assert {p.size for a in attrs for p in a.polyps} == set(POLYP_SIZES)


# ---------------------------------------------------------------------------------------------------------------------
# Captions against the attributes (parsed independently with regular expressions)
# ---------------------------------------------------------------------------------------------------------------------

_COUNT = {"no": 0, "1": 1, "2": 2, "3": 3}


def _check_caption(c: str, a: SceneAttributes) -> None:
    n_p, n_i = len(a.polyps), len(a.instruments)
    if m := re.fullmatch(r"Generate an image with (no|\d+) polyps?\.", c):
        assert _COUNT[m[1]] == n_p, c
    elif m := re.fullmatch(r"Generate an image with (no|\d+) findings?\.", c):
        assert _COUNT[m[1]] == n_p, c
    elif m := re.fullmatch(r"Generate an image with (no|\d+) instruments?\.", c):
        assert _COUNT[m[1]] == n_i, c
    elif c == "Generate an image containing a polyp.":
        assert n_p >= 1
    elif c == "Generate an image containing a green/black box artefact.":
        assert a.box_artefact
    elif c == "Generate an image not containing a green/black box artefact.":
        assert not a.box_artefact
    elif c == "Generate an image containing text.":
        assert a.text_lines
    elif c == "Generate an image not containing text.":
        assert not a.text_lines
    elif m := re.fullmatch(r"Generate an image from a (\w+) procedure\.", c):
        assert m[1] == a.procedure
    elif m := re.fullmatch(r"Generate an image with (?:a polyp|polyps) of size (.+)\.", c):
        sizes = re.split(r", | and ", m[1])
        assert set(sizes) == {p.size for p in a.polyps}, c
    elif m := re.fullmatch(r"Generate (?:a polyp|polyps) of type (.+)\.", c):
        assert {t.removeprefix("paris ") for t in re.split(r", | and ", m[1])} == {p.paris for p in a.polyps}, c
    elif m := re.fullmatch(r"Generate an image with an abnormality with the colou?rs? (.+)\.", c):
        colors = set(re.split(r", | and ", m[1]))
        assert colors == ({"pink", "red"} if any(p.tone == "red" for p in a.polyps) else {"pink"}), c
    elif m := re.fullmatch(r"Generate an image containing (.+)\.", c):
        assert set(m[1].split("and")) == {ins.kind for ins in a.instruments}, c
    elif m := re.fullmatch(r"Generate an image with an an (abnormality|instrument) located in the (.+)\.", c):
        cells = re.split(r", | and ", m[2])
        assert all(x in LOCATIONS for x in cells)
        assert cells == sorted(cells, key=CAPTION_LOCATION_ORDER.index)  # the real prompts' order
        assert (n_p if m[1] == "abnormality" else n_i) > 0
    else:
        raise AssertionError(f"unexpected caption {c!r}")


def test_captions_are_true_of_the_attributes(scenes):
    for a, _, _ in scenes:
        caps = captions_for(a)
        assert len(caps) == len(set(caps)) and 6 <= len(caps) <= 13
        for c in caps:
            _check_caption(c, a)
        # The facts that every scene states, each exactly once.
        assert sum(c.startswith("Generate an image from a") for c in caps) == 1
        assert sum("green/black box" in c for c in caps) == 1
        assert sum(c.endswith(" text.") for c in caps) == 1
    # The wording the real data uses, including its "an an" typo.
    caps = {c for a, _, _ in scenes for c in captions_for(a)}
    for expected in (
        "Generate an image with 2 polyps.",
        "Generate an image with no polyps.",
        "Generate an image with 1 instrument.",
        "Generate an image with no instruments.",
        "Generate an image not containing a green/black box artefact.",
    ):
        assert expected in caps
    assert any(c.startswith("Generate an image with an an abnormality located in the ") for c in caps)


def test_location_captions_match_the_rendered_masks(scenes):
    """Where the caption says the polyps are is where the (independently rendered, 96 px) polyp pixels are."""
    for a, _, _ in scenes[:60]:
        if not a.polyps:
            continue
        _, masks = render_scene(a, 96, np.random.default_rng(0))
        listed = set(scene_locations(a)["abnormality"])
        coverage = {name: masks["polyp"][i // 3 * 32 : i // 3 * 32 + 32, i % 3 * 32 : i % 3 * 32 + 32].mean()
                    for i, name in enumerate(LOCATIONS)}  # fmt: skip
        # Listed: cells covered for >= 2 % (measured at 48 px); allow for the resolution with a 0.5-4 % band.
        assert {c for c, f in coverage.items() if f >= 0.04} <= listed <= {c for c, f in coverage.items() if f >= 0.005}
        for p in a.polyps:  # the cell each centre was placed in is listed
            assert p.location in listed


def test_captions_use_the_real_prompt_wording(shared_data):
    """Most generated captions appear verbatim among the 483 real MEDVQA-GI 2024 prompts (the rest are location or
    multi-value combinations the dev set happens not to contain)."""
    with open(shared_data / "prompts" / "medvqa_gi_2024_dev_prompt_counts.csv", newline="") as f:
        real = {row["prompt"] for row in csv.DictReader(f)}
    caps = [c for i in range(150) for c in captions_for(sample_attributes(np.random.default_rng(i)))]
    fixed = [c for c in caps if " located in " not in c and ", " not in c]
    assert all(c in real for c in fixed), sorted({c for c in fixed if c not in real})
    assert np.mean([c in real for c in caps]) > 0.9


# ---------------------------------------------------------------------------------------------------------------------
# Detectors
# ---------------------------------------------------------------------------------------------------------------------


def test_detectors_agree_with_the_attributes(scenes):
    box = np.mean([has_box_artefact(img) == a.box_artefact for a, img, _ in scenes])
    text = np.mean([has_text_overlay(img) == a.has_text for a, img, _ in scenes])
    tools = np.mean([has_instrument(img) == bool(a.instruments) for a, img, _ in scenes])
    assert box >= 0.95 and text >= 0.95 and tools >= 0.95, (box, text, tools)


@pytest.mark.parametrize("degrade", ["blur", "jpeg"])
def test_detectors_survive_blur_and_jpeg(scenes, degrade):
    """Generated images are softer and noisier than renders: the detectors must not rely on crisp pixels."""

    def degraded(img):
        if degrade == "blur":
            return img.filter(ImageFilter.GaussianBlur(1))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=50)
        return Image.open(buf)

    results = [(a, degraded(img)) for a, img, _ in scenes[:60]]
    assert np.mean([has_box_artefact(img) == a.box_artefact for a, img in results]) >= 0.95
    assert np.mean([has_text_overlay(img) == a.has_text for a, img in results]) >= 0.95
    assert np.mean([has_instrument(img) == bool(a.instruments) for a, img in results]) >= 0.95


@pytest.mark.parametrize("size", [128, 256])
def test_detectors_at_other_sizes_and_input_types(size):
    for a, img, _ in _scenes(12, size=size, offset=500):
        as_tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # generator output convention
        assert has_box_artefact(as_tensor) == has_box_artefact(np.asarray(img)) == a.box_artefact
        assert has_text_overlay(as_tensor) == a.has_text
        assert has_instrument(img) == bool(a.instruments)


def test_masks_are_consistent(scenes):
    for a, img, m in scenes[:30]:
        assert m["polyp"].any() == bool(a.polyps)
        assert set(np.unique(m["polyp_instances"])) <= set(range(len(a.polyps) + 1))
        assert m["box"].any() == a.box_artefact and m["text"].any() == a.has_text
        assert not (m["polyp"] & m["instrument"]).any() and not (m["polyp"] & ~m["frame"]).any()
        pixels = np.asarray(img)
        assert (pixels[~m["frame"] & ~m["text"] & ~m["box"]] == 0).all()  # black frame corners


# ---------------------------------------------------------------------------------------------------------------------
# Epochs, sampler, collation
# ---------------------------------------------------------------------------------------------------------------------


def test_caption_changes_across_epochs_while_the_image_stays():
    ds = SyntheticGIDataset(num_samples=16, resolution=32, seed=0)
    first = [ds[i] for i in range(16)]
    ds.set_epoch(1)
    second = [ds[i] for i in range(16)]
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) and a["id"] == b["id"] for a, b in zip(first, second))
    assert sum(a["caption"] != b["caption"] for a, b in zip(first, second)) >= 4
    # (index, epoch) keys give the same as set_epoch; every caption is one of the scene's true captions.
    assert [ds[(i, 0)]["caption"] for i in range(16)] == [x["caption"] for x in first]
    assert all(x["caption"] in ds.scene(i)[1] for i, x in enumerate(second))
    # Over many epochs a scene's captions cover most of its true captions.
    seen = {ds.caption(0, e) for e in range(60)}
    assert len(seen) >= 0.8 * len(ds.scene(0)[1])


def test_epoch_shuffle_sampler():
    s = EpochShuffleSampler(10, seed=4)
    e0 = list(s)
    assert sorted(i for i, _ in e0) == list(range(10)) and {e for _, e in e0} == {0} and len(s) == 10
    assert list(EpochShuffleSampler(10, seed=4)) == e0  # deterministic
    s.set_epoch(3)
    e3 = list(s)
    assert {e for _, e in e3} == {3} and [i for i, _ in e3] != [i for i, _ in e0]
    assert list(EpochShuffleSampler(10, seed=4, epoch=3)) == e3  # resumable: a pure function of (seed, epoch)
    assert [i for i, _ in EpochShuffleSampler(5, shuffle=False)] == list(range(5))


def test_collate_keeps_attributes_as_a_list():
    ds = SyntheticGIDataset(num_samples=4, resolution=32)
    batch = synthetic_collate([ds[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert isinstance(batch["caption"], list) and isinstance(batch["id"], list) and len(batch["id"]) == 4
    assert [b["num_polyps"] for b in batch["attributes"]] == [ds[i]["attributes"]["num_polyps"] for i in range(4)]


def test_render_is_a_pil_rgb_image():
    attrs = sample_attributes(np.random.default_rng(0))
    image, _ = render_scene(attrs, 80)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (80, 80)
