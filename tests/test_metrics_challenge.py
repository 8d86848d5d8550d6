"""Challenge scores from features: equal to a literal NumPy/SciPy/sklearn copy of the MEDVQA-GI script's loop."""

import warnings

import numpy as np
import pytest

from msdm.metrics.realism.challenge import (
    agreement,
    challenge_pairs,
    challenge_scores,
    diversity,
    fid_to_real,
    fidelity_from_fid,
    per_prompt_metrics,
    real_features_by_prompt,
    round_scores,
)
from tests.challenge_reference import diversity_score, fid_score, mean_cosine_sim, reference_scores

# ---- synthetic features in the challenge's shape ----


def make_features(num_prompts=12, per_prompt=10, d=48, num_real=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_prompts // 2, d)) * 2 + 5  # paraphrase pairs share a centre
    gen = {p: (centers[(p - 1) // 2] + rng.normal(size=(per_prompt, d))).astype(np.float32)
           for p in range(1, num_prompts + 1)}
    real = {f"img{j:03d}": (rng.normal(size=d) * 1.5 + 5).astype(np.float32) for j in range(num_real)}
    ids = sorted(real)
    mapping = {str(p): list(rng.choice(ids, size=int(rng.integers(2, 9)), replace=False))
               for p in range(1, num_prompts + 1)}
    return gen, real, mapping


@pytest.mark.parametrize("reference_compatible", [True, False])
@pytest.mark.parametrize("num_prompts", [12, 10])  # 10: the script's half-loop covers prompts 1-6 (3 pairs)
def test_scores_equal_the_reference_loop(reference_compatible, num_prompts):
    gen, real, mapping = make_features(num_prompts=num_prompts)
    ref, _ = reference_scores(gen, real, mapping, half=reference_compatible)
    ours = challenge_scores(gen, real_features_by_prompt(real, mapping, gen), reference_compatible=reference_compatible)
    for k in ("fidelity", "agreement", "diversity", "FBD"):
        assert ours[k] == pytest.approx(ref[k], rel=1e-6), k
    expected_pairs = {12: 3, 10: 3}[num_prompts] if reference_compatible else num_prompts // 2
    assert ours["num_pairs"] == expected_pairs
    assert round_scores(ours) == {k: round(v, 2) for k, v in ours.items() if k in ref}


def test_pairing_quirk():
    assert challenge_pairs(range(1, 9)) == [(1, 2), (3, 4), (5, 6), (7, 8)]
    assert challenge_pairs(range(1, 9), reference_compatible=True) == [(1, 2), (3, 4)]
    assert challenge_pairs([4, 3, 2, 1, 6, 5], reference_compatible=True) == [(1, 2), (3, 4)]  # range(0, 3, 2)
    with pytest.raises(ValueError, match="even"):
        challenge_pairs(range(1, 8))


def test_building_blocks_match_the_script_functions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(10, 32)) + 1, rng.normal(size=(7, 32)) + 1
    assert agreement(a, b) == pytest.approx(mean_cosine_sim(a, b), abs=1e-12)
    assert diversity(a) == pytest.approx(diversity_score(a), abs=1e-12)
    assert fid_to_real(a, b) == pytest.approx(fid_score(a, b), rel=1e-6)
    assert fidelity_from_fid(999.0) == pytest.approx(1.0)


def test_per_prompt_metrics():
    gen, real, mapping = make_features(num_prompts=4)
    real_pp = real_features_by_prompt(real, mapping, gen)
    out = per_prompt_metrics(gen, real_pp, pairs=[(1, 2), (3, 4)])
    assert sorted(out) == [1, 2, 3, 4]
    for p, m in out.items():
        assert m["fbd"] == pytest.approx(fid_score(gen[p].astype(np.float64), real_pp[p]), rel=1e-6)
        assert m["fidelity"] == pytest.approx(1000 / (1 + m["fbd"]))
        # the script normalises float32 features in float32; we work in float64: ~1e-8 apart
        assert m["diversity"] == pytest.approx(diversity_score(gen[p]), rel=1e-6)
        assert m["num_images"] == 10
    assert out[1]["pair"] == 2 and out[2]["pair"] == 1
    assert out[1]["agreement"] == out[2]["agreement"] == pytest.approx(mean_cosine_sim(gen[1], gen[2]), abs=1e-9)
    # without real features or pairs: only diversity
    bare = per_prompt_metrics(gen, {})
    assert bare[3]["fbd"] is None and bare[3]["agreement"] is None and bare[3]["diversity"] > 0


def test_single_real_image():
    gen, real, mapping = make_features(num_prompts=4)
    mapping["1"] = mapping["1"][:1]
    real_pp = real_features_by_prompt(real, mapping, gen)
    with pytest.raises(ValueError, match="only one real image"):
        challenge_scores(gen, real_pp)
    # the reference's np.cov of one row is NaN: older SciPy returns a NaN sqrtm (NaN fidelity), current SciPy raises
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ref, _ = reference_scores(gen, real, mapping, half=False)
            assert np.isnan(ref["fidelity"])
        except np.linalg.LinAlgError:
            pass
    assert np.isnan(challenge_scores(gen, real_pp, single_real="nan")["fidelity"])
    # zero-covariance: FD to a point mass = |mu - x|^2 + tr(Sigma_gen), the n_real -> 1 limit of the formula
    g, x = gen[1].astype(np.float64), real_pp[1][0]
    expected = ((g.mean(0) - x) ** 2).sum() + np.trace(np.cov(g, rowvar=False))
    assert fid_to_real(g, x[None], single_real="zero-covariance") == pytest.approx(expected, rel=1e-12)
    scores = challenge_scores(gen, real_pp, single_real="zero-covariance")
    assert np.isfinite(scores["fidelity"]) and scores["pairs"][0]["fid_a_real"] == pytest.approx(expected, rel=1e-12)


def test_missing_real_ids_are_reported():
    gen, real, mapping = make_features(num_prompts=4)
    mapping["1"] = ["nope"]
    with pytest.raises(KeyError, match="nope"):
        real_features_by_prompt(real, mapping, gen)
