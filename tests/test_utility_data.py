"""msdm.utility.data / class_prompts: every real-set form gives the same labelled images; generated folders are
labelled by their prompts; bad input fails with the fix or is counted."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from msdm.utility.class_prompts import parse_label_set, read_class_prompts
from msdm.utility.data import load_generated, load_labelled

CLASSES = ("no polyp", "polyp")


def _image(k: int) -> Image.Image:
    rng = np.random.default_rng(k)
    return Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))


@pytest.fixture()
def class_folders(tmp_path):
    root = tmp_path / "folders"
    rows = []
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for k in range(3 + c):
            name = f"img{c}{k}.png"
            _image(10 * c + k).save(root / cls / name)
            rows.append({"image": f"{cls}/{name}", "label": cls})
    return root, rows


def test_class_folders_table_and_hf_dataset_give_the_same_labelled_images(tmp_path, class_folders):
    root, rows = class_folders
    folders = load_labelled(root, resolution=16)
    assert folders.classes == list(CLASSES)
    assert folders.images.shape == (7, 3, 16, 16) and folders.images.dtype == torch.uint8
    assert folders.class_counts() == {"no polyp": 3, "polyp": 4}

    table = root / "labels.csv"
    with table.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "label"])
        w.writeheader()
        w.writerows(rows)
    from_table = load_labelled(table, resolution=16)
    assert torch.equal(from_table.images, folders.images) and torch.equal(from_table.targets, folders.targets)

    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    ds = datasets.Dataset.from_dict({"image": [str(root / r["image"]) for r in rows],
                                     "label": [CLASSES.index(r["label"]) for r in rows]}, features=feats)
    ds.save_to_disk(str(tmp_path / "hf"))
    from_hf = load_labelled(tmp_path / "hf", split="train", resolution=16)
    assert from_hf.classes == list(CLASSES)
    assert torch.equal(from_hf.images, folders.images) and torch.equal(from_hf.targets, folders.targets)


def test_the_test_set_must_use_the_training_classes(tmp_path, class_folders):
    root, _ = class_folders
    (root / "tumour").mkdir()
    _image(99).save(root / "tumour" / "x.png")
    with pytest.raises(ValueError, match=r"\['tumour'\] are not among the training set's"):
        load_labelled(root, classes=list(CLASSES), resolution=16)


def test_multilabel_label_sets_and_zero_one_columns(tmp_path):
    rows = [("a.png", "polyp+instrument", 1, 1), ("b.png", "none", 0, 0), ("c.png", "instrument", 0, 1)]
    for k, (name, *_rest) in enumerate(rows):
        _image(k).save(tmp_path / name)
    table = tmp_path / "labels.jsonl"
    table.write_text("\n".join(json.dumps({"file_name": n, "labels": s, "polyp": p, "instrument": i})
                               for n, s, p, i in rows))
    sets = load_labelled(table, multilabel=True, label_column="labels", resolution=8)
    cols = load_labelled(table, multilabel=True, label_columns=["polyp", "instrument"], resolution=8)
    assert sets.classes == cols.classes == ["instrument", "polyp"]
    assert sets.targets.tolist() == [[1, 1], [0, 0], [1, 0]]
    assert torch.equal(sets.targets, cols.targets)
    assert sets.strata() == [(0, 1), (), (0,)]
    with pytest.raises(ValueError, match="add --multilabel"):
        load_labelled(table, label_columns=["polyp"], resolution=8)


def test_bad_images_are_reported_with_the_fix_or_counted(class_folders):
    root, _ = class_folders
    (root / "polyp" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"(?s)corrupt.*on_bad_sample='skip'"):
        load_labelled(root, resolution=16)
    kept = load_labelled(root, resolution=16, on_bad_sample="skip")
    assert len(kept) == 7 and kept.report.counts["corrupt"] == 1


def test_class_prompts_from_file_and_pairs(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"polyp": ["Generate an image containing a polyp."], "no polyp": "Generate an image with no polyps."}))
    cp = read_class_prompts(f, ["polyp=Generate an image with 1 polyp."])
    assert cp.prompts() == ["Generate an image containing a polyp.", "Generate an image with 1 polyp.",
                            "Generate an image with no polyps."]
    assert [g.name for g in cp.group_of_prompt()] == ["polyp", "polyp", "no polyp"]
    ml = read_class_prompts(pairs=["polyp+instrument=both", "none=neither"], multilabel=True)
    assert [g.labels for g in ml.groups] == [("instrument", "polyp"), ()]
    assert parse_label_set(" b+a ") == ("a", "b")
    with pytest.raises(ValueError, match="given for both"):
        read_class_prompts(pairs=["a=same text", "b=same text"])
    with pytest.raises(ValueError, match="CLASS=PROMPT"):
        read_class_prompts(pairs=["no equals sign"])


def test_generated_folder_is_labelled_by_prompt_and_unknown_prompts_are_counted(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    prompts = ["Generate an image containing a polyp.", "Generate an image with no polyps.", "Something else."]
    (gen / "prompts.json").write_text(json.dumps({str(k + 1): p for k, p in enumerate(prompts)}))
    for p in range(3):
        for i in range(2):
            _image(p * 2 + i).save(gen / f"prompt{p + 1:04d}_img{i + 1:04d}.png")
    (gen / "provenance.json").write_text("{}")  # other files are not images of the pool
    cp = read_class_prompts(pairs=[f"polyp={prompts[0]}", f"no polyp={prompts[1]}"])
    pool = load_generated(gen, cp, list(CLASSES), "g", resolution=8)
    assert pool.ids == ["g/prompt0001_img0001.png", "g/prompt0001_img0002.png", "g/prompt0002_img0001.png",
                        "g/prompt0002_img0002.png"]
    assert pool.targets.tolist() == [1, 1, 0, 0] and pool.source == "g"
    assert pool.report.counts["unknown_prompt"] == 2
    missing = read_class_prompts(pairs=[f"polyp={prompts[0]}", "no polyp=A prompt never generated."])
    with pytest.raises(ValueError, match=r"no generated image for class\(es\) \['no polyp'\]"):
        load_generated(gen, missing, list(CLASSES), "g", resolution=8)
