"""msdm.utility.plan: stratified, nested real subsets; validation carved from them; paired, nested synthetic draws."""

from collections import Counter

import pytest

from msdm.utility.plan import (
    ExperimentPlan,
    Run,
    make_arms,
    pick_synthetic,
    required_per_stratum,
    run_indices,
    split_real,
    synthetic_counts,
)

# 40 images of class 0, 20 of class 1 (an imbalanced real set), interleaved
STRATA = [0, 0, 1] * 20


def test_real_subsets_are_stratified_nested_and_disjoint_from_validation():
    subsets = {}
    for f in (0.1, 0.25, 0.5, 1.0):
        train, val = split_real(STRATA, f, seed=3, val_fraction=0.25)
        assert not set(train) & set(val)
        chosen = Counter(STRATA[i] for i in train + val)
        assert chosen == {0: max(1, round(f * 40)), 1: max(1, round(f * 20))}  # each class keeps its share
        subsets[f] = set(train) | set(val)
    assert subsets[0.1] <= subsets[0.25] <= subsets[0.5] <= subsets[1.0]  # nested: curves compare like with like
    assert split_real(STRATA, 0.5, 3, 0.25) == split_real(STRATA, 0.5, 3, 0.25)
    assert split_real(STRATA, 0.5, 3, 0.25) != split_real(STRATA, 0.5, 4, 0.25)  # seeds draw different subsets


def test_validation_keeps_one_image_per_class_when_it_can():
    train, val = split_real(STRATA, 0.1, seed=0, val_fraction=0.2)  # 4 + 2 images: 20 % rounds to 1 each
    assert Counter(STRATA[i] for i in val) == {0: 1, 1: 1}
    train, val = split_real([0, 0, 0, 1], 1.0, seed=0, val_fraction=0.2)
    assert Counter([0, 0, 0, 1][i] for i in val) == {0: 1}  # a one-image class stays in training
    assert 3 in train


def test_synthetic_counts_follow_the_real_mix_or_spread_equally():
    train, _ = split_real(STRATA, 1.0, 0, 0.25)  # 30 + 15 training images
    pool = [0] * 100 + [1] * 100
    assert synthetic_counts(STRATA, train, pool, 2.0, "real") == {0: 60, 1: 30}
    assert synthetic_counts(STRATA, train, pool, 2.0, "equal") == {0: 45, 1: 45}
    assert sum(synthetic_counts(STRATA, train, pool, 1.0, "equal").values()) == len(train)


def test_synthetic_draws_are_nested_across_ratios_and_report_a_short_pool():
    pool = [0] * 50 + [1] * 50
    small = pick_synthetic(pool, {0: 10, 1: 5}, seed=1)
    large = pick_synthetic(pool, {0: 20, 1: 10}, seed=1)
    assert set(small) <= set(large)
    assert Counter(pool[i] for i in large) == {0: 20, 1: 10}
    assert pick_synthetic(pool, {0: 10, 1: 5}, seed=2) != small
    with pytest.raises(ValueError, match="--num-per-class 60"):
        pick_synthetic(pool, {0: 60, 1: 5}, seed=1, describe=lambda s: ["polyp", "no polyp"][s])


def test_every_arm_of_a_seed_shares_the_real_subset_and_validation_split():
    arms = make_arms(["gen"], [0.5, 2.0])
    assert [a.name for a in arms] == ["real", "real+gen×0.5", "real+gen×2", "gen only"]
    plan = ExperimentPlan([0.5], [0, 1], arms, val_fraction=0.2)
    pools = {"gen": [0] * 100 + [1] * 100}
    by = {(r.arm.name, r.seed): run_indices(r, STRATA, pools, plan) for r in plan.runs()}
    for seed in (0, 1):
        base = by[("real", seed)]
        for arm in ("real+gen×0.5", "real+gen×2", "gen only"):
            assert by[(arm, seed)]["real_val"] == base["real_val"]
        assert by[("real+gen×2", seed)]["real_train"] == base["real_train"]
        assert by[("gen only", seed)]["real_train"] == []
        assert by[("gen only", seed)]["n_synthetic"] == len(base["real_train"])  # count-matched
        assert by[("real+gen×2", seed)]["n_synthetic"] == 2 * len(base["real_train"])
    assert by[("real", 0)]["real_train"] != by[("real", 1)]["real_train"]


def test_plan_needs_the_baseline_and_computes_what_to_generate():
    with pytest.raises(ValueError, match="real-only arm"):
        ExperimentPlan([1.0], [0], make_arms(["g"], [1.0], real=False))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ExperimentPlan([0.0], [0], make_arms([], []))
    plan = ExperimentPlan([0.25, 1.0], [0], make_arms(["g"], [1.0, 3.0]), val_fraction=0.25)
    # at fraction 1: 30 + 15 training images; ratio 3 with the real mix needs 90 of class 0
    assert required_per_stratum(STRATA, plan) == 90
    assert Run(0.25, plan.arms[1], 0).key == "f0.25/real+gx1/seed0"
