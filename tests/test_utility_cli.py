"""``msdm utility`` end to end on the synthetic task: the same seeds give the same table, an interrupted
experiment resumes, multi-label targets run, and bad requests fail with the fix."""

import json

import numpy as np
import pytest

from msdm.cli import main
from msdm.utility.synthetic_task import write_synthetic_task

# 8 + 8 real training images (6 + 6 after the validation split), 10 + 10 test images, 24 px, a 4-wide CNN, 3 epochs
FAST = ["--resolution", "24", "--width", "4", "--batch-size", "8", "--max-epochs", "3", "--patience", "2",
        "--accelerator", "cpu", "--bootstrap", "100"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_synthetic_task(tmp_path_factory.mktemp("task"), n_train_per_class=8, n_test_per_class=10,
                                resolution=24, seed=0)


def _utility(task, out, *extra):
    argv = ["utility", "--train", str(task["train"]), "--test", str(task["test"]), "--prompts", str(task["prompts"]),
            "--out", str(out), *FAST, *extra]
    assert main(argv) == 0


@pytest.mark.slow
def test_same_seeds_give_the_same_table_and_reruns_resume(task, tmp_path, capsys):
    args = ["--generator", "render:follow", "--fractions", "1", "--seeds", "0,1", "--arms", "mixed"]
    _utility(task, tmp_path / "a", *args)
    _utility(task, tmp_path / "b", *args)
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert a["rows"] == b["rows"]
    assert (tmp_path / "a" / "results.md").read_text() == (tmp_path / "b" / "results.md").read_text()
    for run in a["runs"]:
        pa = np.load(tmp_path / "a" / "runs" / run["key"] / "test_probs.npy")
        assert np.array_equal(pa, np.load(tmp_path / "b" / "runs" / run["key"] / "test_probs.npy"))
    # the seeds matter: a different real subset, synthetic draw and initialisation
    p0, p1 = (np.load(tmp_path / "a" / "runs" / f"f1/real/seed{s}" / "test_probs.npy") for s in (0, 1))
    assert not np.array_equal(p0, p1)
    assert [r["arm"] for r in a["rows"]] == ["real", "real+render-follow×1"]
    assert a["rows"][1]["n_synthetic"] == a["rows"][1]["n_real"] == a["rows"][0]["n_real"]
    assert (tmp_path / "a" / "results.png").stat().st_size > 0
    capsys.readouterr()
    _utility(task, tmp_path / "a", *args)  # a rerun finds every run done
    assert capsys.readouterr().out.count("done earlier") == 4
    assert json.loads((tmp_path / "a" / "results.json").read_text())["rows"] == a["rows"]
    _utility(task, tmp_path / "a", *args, "--generator", "render:contradict")  # a new generator: only its runs train
    out = capsys.readouterr().out
    assert out.count("done earlier") == 4 and "f1/real+render-contradictx1/seed1" in out
    _utility(task, tmp_path / "a", *args[:-4], "--seeds", "0", "--arms", "mixed", "--max-epochs", "2")  # changed
    assert "done earlier" not in capsys.readouterr().out


@pytest.mark.slow
def test_multilabel_attribute_targets(tmp_path):
    task = write_synthetic_task(tmp_path / "task", "polyp+instrument", n_train_per_class=4, n_test_per_class=4,
                                resolution=24)
    assert sorted(p.name for p in task["train"].iterdir()) == ["instrument", "none", "polyp", "polyp+instrument"]
    _utility(task, tmp_path / "out", "--multilabel", "--generator", "render:follow", "--fractions", "1", "--seeds",
             "0", "--ratios", "0.5")
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["multilabel"] and res["classes"] == ["instrument", "polyp"]
    assert res["generators"]["render-follow"]["per_class"]["polyp"] > 0
    assert [r["arm"] for r in res["rows"]] == ["real", "real+render-follow×0.5", "render-follow only"]
    assert set(res["rows"][1]["diff"]) == {"accuracy", "balanced_accuracy", "macro_f1", "auroc"}


def test_bad_requests_name_the_fix(task, tmp_path):
    with pytest.raises(SystemExit, match=r"prompt classes \['tumour'\]"):
        _utility(task, tmp_path / "x", "--generator", "render:follow", "--prompt", "tumour=Generate an image with 1 polyp.")
    with pytest.raises(SystemExit, match="need class prompts"):
        main(["utility", "--train", str(task["train"]), "--test", str(task["test"]), "--generator", "render:follow",
              "--out", str(tmp_path / "y"), *FAST])
    with pytest.raises(ValueError, match="--num-per-class 12"):
        _utility(task, tmp_path / "z", "--generator", "render:follow", "--num-per-class", "2", "--ratios", "2",
                 "--fractions", "1", "--seeds", "0")
