"""Intervals: the Gram-matrix bootstrap FID equals FID of the resample written out; percentile intervals cover;
the stability warnings name their rule."""

import numpy as np
import pytest

from msdm.metrics.realism.frechet import frechet_distance
from msdm.metrics.realism.intervals import (
    _frechet_weighted,
    frechet_bootstrap,
    normal_interval,
    percentile_bootstrap_mean,
    stability_warnings,
)


def test_weighted_frechet_equals_the_resample_written_out():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 64)), rng.normal(size=(30, 64)) + 0.3  # fewer samples than dimensions
    k11, k22, k12 = x @ x.T, y @ y.T, x @ y.T
    assert _frechet_weighted(k11, k22, k12, np.ones(40), np.ones(30)) == pytest.approx(frechet_distance(x, y),
                                                                                        rel=1e-9)
    for _ in range(3):
        w1 = np.bincount(rng.integers(0, 40, 40), minlength=40)
        w2 = np.bincount(rng.integers(0, 30, 30), minlength=30)
        resample = frechet_distance(np.repeat(x, w1, 0), np.repeat(y, w2, 0))
        assert _frechet_weighted(k11, k22, k12, w1.astype(float), w2.astype(float)) == pytest.approx(resample, rel=1e-9)
    boot = frechet_bootstrap(x, y, num_samples=20)
    assert boot.shape == (20,) and np.all(boot > 0)


def test_percentile_bootstrap_of_a_proportion():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):  # ~95 % of intervals hold the true rate 0.3 (binomial sd of the rate 0.015)
        iv = percentile_bootstrap_mean(rng.random(200) < 0.3, num_samples=500, seed=int(rng.integers(1e9)))
        covered += iv.low <= 0.3 <= iv.high
    assert 0.88 <= covered / 200 <= 0.99
    iv = normal_interval(1.0, 0.5)
    assert iv.low == pytest.approx(1 - 0.98, abs=1e-3) and iv.high == pytest.approx(1.98, abs=1e-3)


def test_stability_warnings_state_rule_and_source():
    w = stability_warnings({"FID": {"n_real": 150, "n_generated": 1000},
                            "KID": {"n_real": 150, "n_generated": 1000, "interval": {"low": -0.01, "high": 0.02}},
                            "precision": {"n_real": 150, "n_generated": 1000},
                            "recall": {"n_real": 150, "n_generated": 1000},
                            "copy_fraction": {"n_real": 700, "n_generated": 1000, "n_calibration": 148,
                                              "alpha": 0.02}})
    assert len(w) == 4  # P/R once
    assert "n = 150 < 2048" in w[0] and "Chong & Forsyth 2020" in w[0]
    assert "interval holds 0" in w[1] and "Bińkowski" in w[1]
    assert w[2].startswith("warning: P/R/D/C")
    assert "148 calibration frames < 10/α = 500" in w[3]
    assert stability_warnings({"FID": {"n_real": 5000, "n_generated": 10000}}) == []
