"""``msdm annotate report`` on a synthetic study with planted preferences: the planted order is recovered, the
correlations with the automatic metrics have the planted sign, the unblinding joins each set to its own metrics."""

import csv
import json

import numpy as np
import pytest

from msdm.annotate.report import write_report
from msdm.annotate.store import GLOBAL_RANK, RANK, RatingStore
from msdm.annotate.study import ASPECT_IDS, KEY_FILE, build_study, load_key, load_study
from msdm.annotate.testing import simulate_ratings, write_study_inputs
from msdm.cli import main


@pytest.fixture(scope="module")
def planted(tmp_path_factory, kvasir_dir):
    root = tmp_path_factory.mktemp("report")
    inp = write_study_inputs(root / "inputs", kvasir_dir / "images", num_pairs=3, size=48)
    study_dir = build_study(root / "study", inp["models"], inp["real"], paired=True, real_mapping=inp["real_mapping"],
                            num_prompts=6, global_images=3, seed=5)
    study = load_study(study_dir)
    key = load_key(study, study_dir / KEY_FILE)
    store = RatingStore(study_dir / "ratings.sqlite", study)
    simulate_ratings(store, key, raters=("r1", "r2", "r3"), noise=1.0, seed=0)
    # a fourth rater who stopped half-way and gave one rank twice: scores count, that ranking does not
    store.save("r4", 0, "A", "clinical_realism", 0)
    for item, v in (("A", 1), ("B", 1), ("C", 2), ("real", 3)):
        store.save("r4", 0, item, RANK, v)
    return {"dir": study_dir, "study": study, "key": key, "root": root}


@pytest.fixture(scope="module")
def tiny_biomedclip(tmp_path_factory):
    from msdm.metrics.testing import write_tiny_biomedclip_transformers

    return write_tiny_biomedclip_transformers(tmp_path_factory.mktemp("tiny_biomedclip"))


@pytest.fixture(scope="module")
def report(planted, tiny_biomedclip):
    out = write_report(planted["dir"], extractor="biomedclip", extractor_source=tiny_biomedclip)
    return out, json.loads((out / "results.json").read_text())


def test_planted_order_is_recovered(report, planted):
    out, res = report
    assert res["models"] == ["sharp", "blurry", "noisy"] and res["raters"] == ["r1", "r2", "r3", "r4"]
    ranks = res["ranks"]
    assert ranks["real"]["mean"] == 1.0
    assert ranks["sharp"]["mean"] < ranks["blurry"]["mean"] < ranks["noisy"]["mean"]
    assert ranks["sharp"]["rankings"] == 18  # 3 raters x 6 prompts; r4's ranking with a repeated rank is left out
    for a in ASPECT_IDS:
        assert res["aspects"]["sharp"][a]["mean"] > res["aspects"]["blurry"][a]["mean"] > res["aspects"]["noisy"][a]["mean"]
    a0 = planted["key"]["prompts"][0]["letters"]["A"]  # r4's one score counts, for the model behind A on prompt 0
    assert {m: res["aspects"][m]["clinical_realism"]["n"] for m in res["models"]} == {
        m: 19 if m == a0 else 18 for m in res["models"]}
    glob = res["global_preference"]
    assert glob["sharp"]["mean"] == 1.0 and glob["sharp"]["first_places"] == 3 and glob["noisy"]["mean"] == 3.0
    assert res["completeness"]["r1"] == {"prompts_complete": 6, "global_complete": True}
    assert res["completeness"]["r4"] == {"prompts_complete": 0, "global_complete": False}


def test_correlations_have_the_planted_sign(report):
    _, res = report
    c = res["correlations"]
    # noisy sets are far from the real images and nearly alike (blur + noise), and ranked last
    assert c["fbd"]["spearman_rho"] > 0.5 and c["fbd"]["spearman_p"] < 0.01 and c["fbd"]["kendall_tau"] > 0.4
    assert c["diversity"]["spearman_rho"] < 0 and c["diversity"]["kendall_tau"] < 0
    assert c["fbd"]["n"] == 18  # 6 prompts x 3 models
    per_model = res["metrics"]["per_model"]
    assert per_model["noisy"]["FBD"] > per_model["sharp"]["FBD"]


def test_agreement_between_consistent_raters_is_high(report):
    _, res = report
    alpha = {(a["what"], a["level"]): a["alpha"] for a in res["agreement"]}
    assert alpha[("per-prompt rank", "ordinal")] > 0.8
    assert alpha[("score: all aspects", "interval")] > 0.7
    assert alpha[("global preference", "ordinal")] == pytest.approx(1.0)


def test_each_set_is_joined_to_its_own_metrics(report, planted, tiny_biomedclip):
    """Recompute one set's FBD from the *source* files the key names (not the study copies) and its prompt's real
    images: the report's number for that (prompt, model) must be the same."""
    from msdm.metrics.realism.challenge import fid_to_real
    from msdm.metrics.realism.features import build_extractor

    out, _ = report
    study, key = planted["study"], planted["key"]
    ext = build_extractor("biomedclip", tiny_biomedclip)
    rows = list(csv.DictReader((out / "per_prompt.csv").open()))
    for k in (1, 4):
        for model in ("sharp", "noisy"):
            letter = next(le for le, m in key["prompts"][k]["letters"].items() if m == model)
            gen = ext.extract_paths([s["file"] for s in key["prompts"][k]["sources"][letter]]).double().numpy()
            real = ext.extract_paths([planted["dir"] / p for p in study["prompts"][k]["real"]]).double().numpy()
            row = next(r for r in rows if int(r["prompt"]) == k and r["model"] == model)
            assert row["letter"] == letter
            assert float(row["fbd"]) == pytest.approx(fid_to_real(gen, real), rel=1e-6)


def test_report_files(report):
    out, res = report
    md = (out / "summary.md").read_text()
    for s in ("sharp", "Clinical Realism", "Spearman", "Krippendorff", "aspects.png", "ranks_vs_metrics.png"):
        assert s in md
    for png in ("aspects.png", "ranks_vs_metrics.png"):
        from PIL import Image

        with Image.open(out / png) as im:
            assert im.size[0] > 500 and np.asarray(im.convert("L")).std() > 5  # a drawn figure, not blank
    rows = list(csv.DictReader((out / "per_prompt.csv").open()))
    assert len(rows) == 6 * 4 and {r["model"] for r in rows} == {"sharp", "blurry", "noisy", "real"}


def test_report_command_without_metrics_and_errors(planted, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["annotate", "report", str(planted["dir"]), "--extractor", "none", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["metrics"] is None and not (out / "ranks_vs_metrics.png").exists()
    assert "Not computed" in (out / "summary.md").read_text()
    assert main(["annotate", "report", str(planted["dir"]), "--extractor", "none", "--db",
                 str(tmp_path / "none.sqlite")]) == 2
    assert "no ratings" in capsys.readouterr().err
    # a key that is not this study's never unblinds anything
    other = build_study(tmp_path / "other", {m: planted["root"] / "inputs" / m for m in ("sharp", "blurry", "noisy")},
                        planted["root"] / "inputs" / "real", paired=True, num_prompts=2, seed=9)
    assert main(["annotate", "report", str(planted["dir"]), "--extractor", "none", "--key",
                 str(other / KEY_FILE)]) == 2


def test_exclude_rater_leaves_their_answers_out(planted, tmp_path, capsys):
    """A test rater's answers count nowhere (scores, ranks, agreement, comments) once excluded; a name that rated
    nothing is an error, not a silent no-op."""
    import shutil

    from msdm.annotate.report import analyse

    store = RatingStore(planted["dir"] / "ratings.sqlite", planted["study"])
    copy = tmp_path / "ratings.sqlite"
    shutil.copy(planted["dir"] / "ratings.sqlite", copy)
    test_store = RatingStore(copy, planted["study"])
    for aspect in ("clinical_realism", "prompt_faithfulness"):  # a tester who clicked 10 everywhere on prompt 0
        for letter in planted["study"]["letters"]:
            test_store.save("tester", 0, letter, aspect, 10)
    test_store.save_comment("tester", 0, "just testing")
    full = analyse(planted["dir"], db_path=copy, extractor="none")
    kept = analyse(planted["dir"], db_path=copy, extractor="none", exclude_raters=["tester"])
    base = analyse(planted["dir"], extractor="none")
    assert "tester" in full["raters"] and "tester" not in kept["raters"] and kept["excluded_raters"] == ["tester"]
    assert kept["aspects"] == base["aspects"] and kept["agreement"] == base["agreement"]
    assert kept["num_answers"] == len(store.answers()) < full["num_answers"]
    assert all(c["rater"] != "tester" for c in kept["comments"]) and any(c["rater"] == "tester" for c in full["comments"])
    assert full["aspects"] != base["aspects"]
    out = tmp_path / "rep"
    assert main(["annotate", "report", str(planted["dir"]), "--db", str(copy), "--extractor", "none", "--out",
                 str(out), "--exclude-rater", "tester", "--quiet"]) == 0
    assert "excluded: tester" in (out / "summary.md").read_text()
    assert main(["annotate", "report", str(planted["dir"]), "--db", str(copy), "--extractor", "none", "--out",
                 str(out), "--exclude-rater", "testr"]) == 2
    assert "no such rater" in capsys.readouterr().err


def test_global_rank_vocabulary():
    assert GLOBAL_RANK == "global_rank" and RANK == "rank"
