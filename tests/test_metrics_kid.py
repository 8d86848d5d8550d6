"""KID: equal to torchmetrics' KernelInceptionDistance (fed features through an identity 'feature module') and to the
unbiased MMD² written out here; the jackknife error against brute-force leave-one-out."""

import numpy as np
import pytest
import torch

from msdm.metrics.realism.kid import kernel_inception_distance, mmd2_unbiased


def reference_mmd2(x, y, degree=3, coef=1.0):
    """Bińkowski et al. 2018, eq. (3) for unequal sizes, with explicit sums over i != i'."""
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + coef) ** degree  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.sum() / (n * m))


def torchmetrics_kid(real, fake, subsets, subset_size, seed):
    from torchmetrics.image.kid import KernelInceptionDistance

    kid = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=subsets, subset_size=subset_size)
    kid.update(torch.from_numpy(real), real=True)
    kid.update(torch.from_numpy(fake), real=False)
    torch.manual_seed(seed)
    mean, std = kid.compute()
    return float(mean), float(std)


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(60, 32)), rng.normal(size=(80, 32)) * 1.1 + 0.2


def test_whole_set_equals_torchmetrics_and_the_formula(feats):
    real, fake = feats
    ours = kernel_inception_distance(real, fake[:60])
    # one subset of all images: torchmetrics only permutes them, and the estimate is permutation invariant
    tm_mean, _ = torchmetrics_kid(real, fake[:60], subsets=1, subset_size=60, seed=0)
    assert ours.value == pytest.approx(tm_mean, abs=1e-6)
    assert ours.method == "whole-set jackknife"
    # unequal sizes: against the formula written out
    assert kernel_inception_distance(real, fake).value == pytest.approx(reference_mmd2(real, fake), abs=1e-6)
    assert mmd2_unbiased(real, fake) == pytest.approx(reference_mmd2(real, fake), abs=1e-12)


def test_subsets_equal_torchmetrics_draw_for_draw(feats):
    real, fake = feats
    ours = kernel_inception_distance(real, fake, subsets=7, subset_size=25, seed=123)
    tm_mean, tm_std = torchmetrics_kid(real, fake, subsets=7, subset_size=25, seed=123)
    assert ours.value == pytest.approx(tm_mean, abs=1e-6)
    assert ours.std == pytest.approx(tm_std, abs=1e-6)
    assert (ours.subsets, ours.subset_size) == (7, 25)


def test_jackknife_error_equals_brute_force_leave_one_out(feats):
    real, fake = feats
    real, fake = real[:15], fake[:12]
    r = kernel_inception_distance(real, fake)
    loo_x = np.array([reference_mmd2(np.delete(real, i, 0), fake) for i in range(len(real))])
    loo_y = np.array([reference_mmd2(real, np.delete(fake, j, 0)) for j in range(len(fake))])
    n, m = len(real), len(fake)
    var = (n - 1) / n * ((loo_x - loo_x.mean()) ** 2).sum() + (m - 1) / m * ((loo_y - loo_y.mean()) ** 2).sum()
    assert r.std == pytest.approx(np.sqrt(var), rel=1e-9)


def test_unbiased_at_small_n():
    # same distribution: the mean over many small draws is ~0 (FID would be clearly positive at n = 20)
    rng = np.random.default_rng(3)
    vals = [kernel_inception_distance(rng.normal(size=(20, 16)), rng.normal(size=(20, 16))).value for _ in range(300)]
    assert abs(np.mean(vals)) < 3 * np.std(vals) / np.sqrt(len(vals))
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4)))
