"""Krippendorff's α against the published worked example and an independent pairwise definition."""

import itertools

import numpy as np
import pytest

from msdm.annotate.agreement import krippendorff_alpha, reliability_matrix

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders, 12 units, missing data.
EXAMPLE = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
           [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
           [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
           [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]


@pytest.mark.parametrize("level, alpha", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849),
                                          ("ratio", 0.797)])
def test_published_example(level, alpha):
    assert krippendorff_alpha(EXAMPLE, level) == pytest.approx(alpha, abs=5e-4)


def _pairwise_interval_alpha(x):
    """α = 1 − D_o / D_e straight from the definition: pairs within units (weighted 1/(m_u − 1)) vs all pairs."""
    units = [col[~np.isnan(col)] for col in np.asarray(x, float).T]
    units = [u for u in units if len(u) >= 2]
    pooled = np.concatenate(units)
    n = len(pooled)
    d_o = sum(sum((a - b) ** 2 for a, b in itertools.permutations(u, 2)) / (len(u) - 1) for u in units) / n
    d_e = sum((a - b) ** 2 for a, b in itertools.permutations(pooled, 2)) / (n * (n - 1))
    return 1 - d_o / d_e


def test_interval_alpha_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 11, 15).astype(float)
    x = np.clip(truth + rng.normal(0, 2, (4, 15)).round(), 0, 10)
    x[rng.random(x.shape) < 0.2] = np.nan
    assert krippendorff_alpha(x, "interval") == pytest.approx(_pairwise_interval_alpha(x), rel=1e-12)


def test_extremes_and_undefined():
    perfect = [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]
    assert krippendorff_alpha(perfect, "ordinal") == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    random = rng.integers(0, 11, (5, 400))
    assert abs(krippendorff_alpha(random, "interval")) < 0.05  # chance level
    assert np.isnan(krippendorff_alpha([[3, 3], [3, 3]], "interval"))  # no variation: undefined
    assert np.isnan(krippendorff_alpha([[1, N], [N, 2]], "interval"))  # no unit rated twice
    # units rated once do not count; values may be any numbers (ordinal uses only their order)
    x = np.array(EXAMPLE)
    assert krippendorff_alpha(x * 10 + 7, "ordinal") == pytest.approx(krippendorff_alpha(x, "ordinal"))


def test_reliability_matrix():
    x, raters, units = reliability_matrix([("b", (0, "m"), 3), ("a", (0, "m"), 4), ("a", (1, "m"), 5)])
    assert raters == ["a", "b"] and units == [(0, "m"), (1, "m")]
    np.testing.assert_array_equal(x, [[4, 5], [3, np.nan]])
