"""The measurement works: on the synthetic task (polyp present vs absent, 16 real images per class), images that
follow their prompts help the classifier and images that contradict them do not.

The "perfect generator" renders scenes drawn with the prompt's facts (``render:follow``); the contradicting one
renders every stated fact negated (``render:contradict``). Both are measured by ``msdm utility`` exactly as an MSDM
or LoRA generator would be (docs/utility.md has the larger table).
"""

import json

import pytest

from msdm.cli import main
from msdm.utility.metrics import METRICS
from msdm.utility.synthetic_task import write_synthetic_task


@pytest.mark.slow
def test_follow_helps_and_contradict_does_not(tmp_path):
    task = write_synthetic_task(tmp_path / "task", n_train_per_class=16, n_test_per_class=40, resolution=32, seed=0)
    argv = ["utility", "--train", str(task["train"]), "--test", str(task["test"]), "--prompts", str(task["prompts"]),
            "--generator", "render:follow", "--generator", "render:contradict", "--arms", "mixed", "--ratios", "3",
            "--fractions", "1", "--seeds", "0,1", "--resolution", "32", "--width", "8", "--batch-size", "8",
            "--lr", "1e-2", "--max-epochs", "30", "--patience", "10", "--accelerator", "cpu", "--bootstrap", "500",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    rows = {r["arm"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["rows"]}
    follow, contra = rows["real+render-follow×3"], rows["real+render-contradict×3"]
    assert follow["n_real"] == 26 and follow["n_synthetic"] == 78
    # a positive difference, its whole paired bootstrap interval above zero
    assert follow["verdict"] == "helps"
    assert follow["diff"]["balanced_accuracy"]["ci_bootstrap"][0] > 0
    assert follow["diff"]["auroc"]["mean"] > 0
    # images that contradict their prompts never help: every metric's difference is <= 0
    for m in METRICS:
        assert contra["diff"][m]["mean"] <= 0, m
    assert contra["verdict"] != "helps"
