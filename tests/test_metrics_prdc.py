"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) against the authors'
formulas written out independently here (scipy distances, full sorts, explicit loops), in float64."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from msdm.metrics.realism.prdc import density_coverage, knn_radii, manifold_scores, pairwise_distances, precision_recall


def reference_prdc(real, fake, k_pr=3, k_dc=5):
    """The papers' definitions, one sample at a time."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)

    def radius(d_self, i, k):  # distance to the k-th nearest *other* sample
        return np.sort(np.delete(d_self[i], i))[k - 1]

    r_pr = [radius(d_rr, i, k_pr) for i in range(len(real))]
    f_pr = [radius(d_ff, j, k_pr) for j in range(len(fake))]
    r_dc = [radius(d_rr, i, k_dc) for i in range(len(real))]
    precision = np.mean([any(d_rf[i, j] <= r_pr[i] for i in range(len(real))) for j in range(len(fake))])
    recall = np.mean([any(d_rf[i, j] <= f_pr[j] for j in range(len(fake))) for i in range(len(real))])
    density = np.mean([sum(d_rf[i, j] <= r_dc[i] for i in range(len(real))) for j in range(len(fake))]) / k_dc
    coverage = np.mean([min(d_rf[i]) <= r_dc[i] for i in range(len(real))])
    return precision, recall, density, coverage


@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (0.7, 1.0), (0.0, 0.4), (1.5, 2.0)])
def test_equal_to_the_authors_formulas(shift, scale):
    rng = np.random.default_rng(int(10 * shift + scale))
    real = rng.normal(size=(120, 16)).astype(np.float32)
    fake = (rng.normal(size=(90, 16)) * scale + shift).astype(np.float32)
    s = manifold_scores(real, fake)
    ref = reference_prdc(real, fake)
    for got, want in zip((s.precision, s.recall, s.density, s.coverage), ref):
        assert got == pytest.approx(want, abs=1e-6)
    assert precision_recall(real, fake) == pytest.approx(reference_prdc(real, fake, 3, 3)[:2], abs=1e-6)
    assert density_coverage(real, fake) == pytest.approx(reference_prdc(real, fake, 5, 5)[2:], abs=1e-6)
    # the per-sample values average to the metrics
    assert s.in_real_manifold.mean() == s.precision and s.real_balls_hit.mean() == pytest.approx(s.density)


def test_behaviour_on_known_cases():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    # a generator that returns the real set: every point inside, every ball covered
    s = manifold_scores(real, real.copy())
    assert s.precision == 1 and s.recall == 1 and s.coverage == 1
    # mode collapse: all generated images near one real point -> precision high, recall and coverage low
    collapsed = real[:1] + 0.01 * rng.normal(size=(100, 8))
    c = manifold_scores(real, collapsed)
    assert c.precision == 1 and c.recall < 0.05 and c.coverage < 0.1  # only balls around real[0] hold it
    # unrealistic but diverse: far away -> precision and density 0
    far = rng.normal(size=(100, 8)) + 10
    f = manifold_scores(real, far)
    assert f.precision == 0 and f.density == 0 and f.coverage == 0


def test_radii_and_distances():
    x = np.array([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(9, 5))
    np.testing.assert_allclose(pairwise_distances(a, b, block=3), cdist(a, b), atol=1e-12)
    with pytest.raises(ValueError, match="k = 4 needs at least"):
        knn_radii(x, 4)
