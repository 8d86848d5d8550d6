"""Caption tables, the seeded image-level split and counter-based randomness."""

import json

import pytest

from msdm.data import rng
from msdm.data.captions import (
    ColumnError,
    group_by_image,
    read_caption_rows,
    read_challenge_captions,
    read_prompt_gt,
)
from msdm.data.report import BadSampleError, SkipReport
from msdm.data.sources import records_from_table
from msdm.data.splits import split_ids


def test_prompt_gt_groups_rows_per_image(tmp_path):
    (tmp_path / "prompt-gt.csv").write_text(
        "Prompt;Filename\nGenerate an image with 1 polyp.;a.jpg\nGenerate an image containing text.;a.jpg\n"
        "Generate an image with 1 polyp.;a.jpg\nGenerate an image with no polyps.;b.jpg\n"
    )
    rows = read_prompt_gt(tmp_path / "prompt-gt.csv")
    assert rows[0] == ("a.jpg", "Generate an image with 1 polyp.", None) and len(rows) == 4
    rep = SkipReport()
    recs = group_by_image(rows, rep)
    assert [r.id for r in recs] == ["a", "b"]
    assert recs[0].prompts == ["Generate an image with 1 polyp.", "Generate an image containing text."]  # deduped
    assert not rep


def test_csv_jsonl_json_tables(tmp_path):
    (tmp_path / "c.csv").write_text("file,text\nx.png,first\ny.png,second\n")
    assert read_caption_rows(tmp_path / "c.csv", "file", "text") == [("x.png", "first", None), ("y.png", "second", None)]
    (tmp_path / "m.jsonl").write_text(json.dumps({"file_name": "x.png", "captions": ["a", "b"]}) + "\n")
    assert read_caption_rows(tmp_path / "m.jsonl", "file_name", "captions") == [("x.png", "a", None), ("x.png", "b", None)]
    (tmp_path / "d.json").write_text(json.dumps({"x.png": ["a", "b"], "y.png": "c"}))
    assert len(read_caption_rows(tmp_path / "d.json")) == 3


def test_wrong_column_names_say_what_exists(tmp_path):
    (tmp_path / "c.csv").write_text("file,text\nx.png,first\n")
    with pytest.raises(ColumnError) as e:
        read_caption_rows(tmp_path / "c.csv", "image", "caption")
    msg = str(e.value)
    assert "['file', 'text']" in msg and "image_column" in msg and "caption_column" in msg
    with pytest.raises(ColumnError, match="Set image_column"):
        records_from_table(tmp_path / "c.csv", tmp_path, SkipReport(), image_column="img")


def test_empty_and_missing_captions_are_counted(tmp_path):
    (tmp_path / "c.csv").write_text("image,caption\na.png,hello\na.png,\nb.png,\nb.png,   \nc.png,ok\n")
    rep = SkipReport()
    recs = group_by_image(read_caption_rows(tmp_path / "c.csv"), rep)
    assert [r.id for r in recs] == ["a", "c"]
    assert rep.counts == {"empty_caption": 3, "no_caption": 1}
    with pytest.raises(BadSampleError, match="empty_caption 3"):
        rep.raise_or_report("raise")
    rep.raise_or_report("skip")  # no error


def test_challenge_captions_file(tmp_path):
    (tmp_path / "k.json").write_text(json.dumps({"img1": {"g1": ["a", "b"], "g2": ["c"]}, "img2": ["d"]}))
    assert read_challenge_captions(tmp_path / "k.json") == {"img1": ["a", "b", "c"], "img2": ["d"]}
    (tmp_path / "k.csv").write_text("img_id,caption\nimg1,a\nimg1,b\n")
    assert read_challenge_captions(tmp_path / "k.csv") == {"img1": ["a", "b"]}


# --- split -------------------------------------------------------------------------------------------------------

IDS = [f"img{i:04d}" for i in range(2000)]


def test_split_is_image_disjoint_and_ten_percent():
    train, val = split_ids(IDS, 0.1, seed=2204)
    assert len(val) == 200 and len(train) == 1800
    assert not set(train) & set(val) and set(train) | set(val) == set(IDS)


def test_split_is_stable_under_seed_and_order():
    _, val = split_ids(IDS, 0.1, seed=1)
    assert split_ids(list(reversed(IDS)), 0.1, seed=1)[1] == sorted(val, key=list(reversed(IDS)).index)
    assert set(split_ids(IDS, 0.1, seed=1)[1]) == set(val)
    assert set(split_ids(IDS, 0.1, seed=2)[1]) != set(val)


def test_split_keeps_validation_images_when_data_grows():
    _, val = split_ids(IDS, 0.1, seed=0)
    _, val_more = split_ids(IDS + [f"new{i}" for i in range(100)], 0.1, seed=0)
    assert len(set(val) & set(val_more)) >= 0.9 * len(val)


def test_tiny_dataset_still_gets_a_validation_image():
    assert len(split_ids(["a", "b", "c"], 0.1, 0)[1]) == 1
    assert split_ids(["a", "b"], 0.0, 0) == (["a", "b"], [])


# --- randomness -------------------------------------------------------------------------------------------------------


def test_counter_rng_is_deterministic_and_uniform():
    assert rng.uniform(1, 2, 3) == rng.uniform(1, 2, 3) != rng.uniform(1, 2, 4)
    xs = [rng.uniform(7, e, i) for e in range(20) for i in range(500)]
    assert 0.48 < sum(xs) / len(xs) < 0.52 and min(xs) >= 0 and max(xs) < 1
    counts = [0] * 5
    for i in range(5000):
        counts[rng.randint(5, 0, i)] += 1
    assert all(900 < c < 1100 for c in counts)
