"""``msdm annotate build``: prompt layout, blinding (letters, stripped metadata), the sealed key."""

import json
import stat

import numpy as np
import pytest
from PIL import Image

from msdm.annotate.study import (
    KEY_FILE,
    StudyError,
    build_study,
    load_key,
    load_study,
    public_image_paths,
    select_prompt_ids,
)
from msdm.annotate.testing import write_study_inputs
from msdm.cli import main
from msdm.provenance import make_record, read_record, save_png


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, kvasir_dir):
    return write_study_inputs(tmp_path_factory.mktemp("inputs"), kvasir_dir / "images", num_pairs=3, size=32)


def test_prompt_selection_keeps_pairs_adjacent():
    import random

    ids = select_prompt_ids(list(range(1, 81)), 40, True, "random", random.Random(0))
    assert len(ids) == 40 and len(set(ids)) == 40
    assert all(ids[k] % 2 == 1 and ids[k + 1] == ids[k] + 1 for k in range(0, 40, 2))  # original at even index
    assert select_prompt_ids(list(range(1, 9)), 4, True, "first", random.Random(0)) == [1, 2, 3, 4]
    assert select_prompt_ids(list(range(1, 9)), 3, False, "first", random.Random(0)) == [1, 2, 3]
    with pytest.raises(StudyError, match="even"):
        select_prompt_ids(list(range(1, 9)), 3, True, "first", random.Random(0))
    with pytest.raises(StudyError, match="pairs"):
        select_prompt_ids(list(range(1, 9)), 4, True, "first", random.Random(0), prompt_ids=[2, 3])


def test_build_layout_blinding_and_key(inputs, tmp_path):
    # a provenance record on a generated image must not reach the study (it names the model)
    src = inputs["models"]["sharp"] / "prompt0003_img0001.png"
    save_png(np.asarray(Image.open(src)), src, make_record("p", 0, {"model": "sharp-model-name"}))
    out = build_study(tmp_path / "study", inputs["models"], inputs["real"], paired=True, real_mapping=inputs["real_mapping"],
                      num_prompts=4, prompt_ids=[1, 2, 5, 6], global_images=3, seed=3)
    study, key = load_study(out), load_key(load_study(out), out / KEY_FILE)
    assert [p["kind"] for p in study["prompts"]] == ["original", "rephrased"] * 2
    assert [p["source_prompt"] for p in study["prompts"]] == [1, 2, 5, 6]
    assert [p["pair"] for p in study["prompts"]] == [1, 0, 3, 2]
    texts = json.loads(inputs["prompts"].read_text())
    assert [p["text"] for p in study["prompts"]] == [texts[i - 1] for i in (1, 2, 5, 6)]
    assert study["letters"] == ["A", "B", "C"] and len(study["aspects"]) == 6
    mapping = json.loads(inputs["real_mapping"].read_text())
    for pr, kp in zip(study["prompts"], key["prompts"]):
        assert set(pr["sets"]) == {"A", "B", "C"} and all(len(v) == 10 for v in pr["sets"].values())
        assert sorted(kp["letters"].values()) == ["blurry", "noisy", "sharp"]
        # a rephrased prompt shows its original's real images (the challenge's real mapping convention)
        first = str(pr["source_prompt"] - (pr["source_prompt"] + 1) % 2)
        assert [s["file"].rsplit("/", 1)[1][:-4] for s in kp["real_sources"]] == mapping[first]
        # every study image has exactly the pixels of its source, and no metadata at all
        for letter, rels in pr["sets"].items():
            for rel, s in zip(rels, kp["sources"][letter]):
                with Image.open(out / rel) as a, Image.open(s["file"]) as b:
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b.convert("RGB")))
                    assert not {k for k in a.info if k not in ("dpi", "gamma")}, a.info
                assert read_record(out / rel) is None
                assert "sharp" not in rel and "blurry" not in rel and "noisy" not in rel
    # per-prompt letters: over a larger study the same letter does not always hide the same model
    big = build_study(tmp_path / "big", inputs["models"], inputs["real"], paired=True, num_prompts=6, seed=0)
    letters_of_sharp = {next(le for le, m in p["letters"].items() if m == "sharp")
                        for p in json.loads((big / KEY_FILE).read_text())["prompts"]}
    assert len(letters_of_sharp) > 1
    # the key is private, committed to, and outside what the page may serve
    assert stat.S_IMODE((out / KEY_FILE).stat().st_mode) == 0o600
    assert all(not p.startswith("key") and p.startswith("images/") for p in public_image_paths(study))
    assert set(study["global"]["sets"]) == {"A", "B", "C"} and len(study["global"]["sets"]["A"]) == 3
    assert "sharp" not in (out / "study.json").read_text()


def test_key_tampering_and_wrong_key_are_refused(inputs, tmp_path):
    a = build_study(tmp_path / "a", inputs["models"], inputs["real"], paired=True, num_prompts=2, seed=1)
    b = build_study(tmp_path / "b", inputs["models"], inputs["real"], paired=True, num_prompts=2, seed=2)
    sa = load_study(a)
    with pytest.raises(StudyError, match="key_sha256"):
        load_key(sa, b / KEY_FILE)
    key = json.loads((a / KEY_FILE).read_text())
    p0 = key["prompts"][0]["letters"]
    p0["A"], p0["B"] = p0["B"], p0["A"]  # swap two models after the fact
    (a / KEY_FILE).write_text(json.dumps(key, indent=2) + "\n")
    with pytest.raises(StudyError, match="edited"):
        load_key(sa, a / KEY_FILE)


def test_build_errors_are_clear(inputs, tmp_path):
    with pytest.raises(StudyError, match="only 3 complete pairs"):
        build_study(tmp_path / "s", inputs["models"], inputs["real"], paired=True, num_prompts=8)
    with pytest.raises(StudyError, match="lacks"):
        build_study(tmp_path / "s", inputs["models"], inputs["real"], paired=True, num_prompts=2, num_images=11)
    bad = tmp_path / "prompts.txt"
    bad.write_text("something else\nanother\n")
    with pytest.raises(StudyError, match="disagrees"):
        build_study(tmp_path / "s", inputs["models"], inputs["real"], paired=True, prompts_file=bad, num_prompts=2)
    build_study(tmp_path / "s", inputs["models"], inputs["real"], paired=True, num_prompts=2, seed=0)
    with pytest.raises(StudyError, match="exists"):
        build_study(tmp_path / "s", inputs["models"], inputs["real"], paired=True, num_prompts=2)
    (tmp_path / "s" / "ratings.sqlite").write_bytes(b"")
    with pytest.raises(StudyError, match="holds ratings"):
        build_study(tmp_path / "s", inputs["models"], inputs["real"], paired=True, num_prompts=2, overwrite=True)


def test_build_command_with_an_external_key(inputs, tmp_path, capsys):
    args = ["annotate", "build", "--out", str(tmp_path / "s"), "--real", str(inputs["real"]),
            "--prompts", str(inputs["prompts"]), "--num-prompts", "2", "--num-real", "4", "--mapping", "per-study",
            "--key", str(tmp_path / "sealed" / "key.json"), "--seed", "0"]
    for name, folder in inputs["models"].items():
        args += ["--model", f"{name}={folder}"]
    assert main(args) == 0
    assert "never served" in capsys.readouterr().out
    study = load_study(tmp_path / "s")
    assert not (tmp_path / "s" / KEY_FILE).exists()
    key = load_key(study, tmp_path / "sealed" / "key.json")
    assert key["prompts"][0]["letters"] == key["prompts"][1]["letters"] == key["global"]["letters"]  # per-study
    assert all(len(p["real"]) == 4 for p in study["prompts"])
    assert main(["annotate", "build", "--out", str(tmp_path / "t"), "--real", str(inputs["real"]),
                 "--model", f"x={tmp_path / 'nowhere'}"]) == 2


def test_pairing_is_explicit_for_a_plain_prompt_list(inputs, tmp_path, capsys):
    """A plain list (the folders' prompts.json, a .txt) is not paired unless asked; the challenge JSON declares its
    pairs; --paired / --unpaired decide either way."""
    plain = build_study(tmp_path / "plain", inputs["models"], inputs["real"], num_prompts=4, select="first", seed=0)
    study = load_study(plain)
    assert study["paired"] is False and {p["kind"] for p in study["prompts"]} == {"prompt"}
    assert all(p["pair"] is None for p in study["prompts"])
    texts = json.loads(inputs["prompts"].read_text())  # a JSON list: plain
    challenge = tmp_path / "challenge.json"
    challenge.write_text(json.dumps({"qa": {str(k): texts[2 * k:2 * k + 2] for k in range(len(texts) // 2)}}))
    s = load_study(build_study(tmp_path / "c", inputs["models"], inputs["real"], prompts_file=challenge,
                               real_mapping=inputs["real_mapping"], num_prompts=4, seed=0))
    assert s["paired"] is True and [p["kind"] for p in s["prompts"]] == ["original", "rephrased"] * 2
    base = ["annotate", "build", "--real", str(inputs["real"]), "--num-prompts", "4", "--seed", "0",
            "--real-mapping", str(inputs["real_mapping"])]
    for name, folder in inputs["models"].items():
        base += ["--model", f"{name}={folder}"]
    assert main([*base, "--out", str(tmp_path / "flag"), "--paired"]) == 0
    assert load_study(tmp_path / "flag")["paired"] is True and "pairs" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "off"), "--prompts", str(challenge), "--unpaired",
                 "--real-mapping", str(inputs["real_mapping"])]) == 2  # unpaired: prompt 2 has no real images
    assert "no images for prompt 2" in capsys.readouterr().err
