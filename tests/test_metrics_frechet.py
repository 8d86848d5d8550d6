"""Fréchet core: the sample path, the statistics path and the mixed path all equal the reference formula with
``scipy.linalg.sqrtm`` (the MEDVQA-GI script's ``fid_score``), on random, rank-deficient and n < d data."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from msdm.metrics.realism.frechet import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    frechet_distance_samples_to_stats,
)

RTOL = 1e-6  # the bar; observed agreement is ~1e-8 or better


def reference_fid(feat1, feat2):
    """Literal copy of the challenge script's ``fid_score`` (submission_task2.py)."""
    mu1, mu2 = feat1.mean(0), feat2.mean(0)
    sigma1, sigma2 = np.cov(feat1, rowvar=False), np.cov(feat2, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm warns on singular products (n < d)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean)


_REFERENCE = {}


def cached_reference_fid(name, f1, f2):
    if name not in _REFERENCE:  # scipy's sqrtm is the slow part of this file: once per case
        _REFERENCE[name] = reference_fid(f1, f2)
    return _REFERENCE[name]


def _cases():
    rng = np.random.default_rng(0)
    d = 64
    # full rank, both n, m > d, different scales and means
    yield "full-rank", rng.normal(size=(300, d)) * 0.7 + 0.3, rng.normal(size=(250, d)) * rng.uniform(0.2, 1.5, d)
    # n < d on both sides (10 images per prompt vs 7 real images, like the challenge's per-prompt FID)
    yield "n<d", rng.normal(size=(10, d)) + 1.0, rng.normal(size=(7, d)) * 2.0
    # rank-deficient with n > d: each set lives in its own 20-dimensional subspace
    b1, b2 = rng.normal(size=(20, d)), rng.normal(size=(20, d))
    yield "rank-deficient", rng.normal(size=(200, 20)) @ b1, rng.normal(size=(150, 20)) @ b2 + 0.5
    # rank-deficient, both sets in the same 20-dimensional subspace
    yield "shared-subspace", rng.normal(size=(200, 20)) @ b1, rng.normal(size=(150, 20)) @ b1 - 0.3
    # features with a large common offset (cancellation-prone), mixed sizes
    yield "offset", rng.normal(size=(12, d)) * 0.1 + 50.0, rng.normal(size=(90, d)) * 0.1 + 50.2


@pytest.mark.parametrize("name,f1,f2", list(_cases()), ids=[c[0] for c in _cases()])
@pytest.mark.parametrize("method", ["samples", "stats", "auto"])
def test_paths_match_scipy_sqrtm(name, f1, f2, method):
    ref = cached_reference_fid(name, f1, f2)
    ours = frechet_distance(f1, f2, method=method)
    assert ours == pytest.approx(ref, rel=RTOL)


@pytest.mark.parametrize("name,f1,f2", list(_cases()), ids=[c[0] for c in _cases()])
def test_stats_and_mixed_paths_match(name, f1, f2):
    ref = cached_reference_fid(name, f1, f2)
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    np.testing.assert_allclose(s1, np.cov(f1, rowvar=False), rtol=1e-10, atol=1e-12)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=RTOL)
    assert frechet_distance_samples_to_stats(f1, mu2, s2) == pytest.approx(ref, rel=RTOL)


def test_identical_sets_give_zero_and_symmetry():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(10, 32)), rng.normal(size=(40, 32))
    assert abs(frechet_distance(f1, f1)) < 1e-9
    assert frechet_distance(f1, f2) == pytest.approx(frechet_distance(f2, f1), rel=1e-10)


def test_accepts_torch_and_float32_in_float64():
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(10, 16)).astype(np.float32), rng.normal(size=(12, 16)).astype(np.float32)
    ref = reference_fid(f1.astype(np.float64), f2.astype(np.float64))
    assert frechet_distance(torch.from_numpy(f1), torch.from_numpy(f2)) == pytest.approx(ref, rel=RTOL)


def test_auto_picks_a_sensible_path():
    from msdm.metrics.realism.frechet import _sample_path_is_cheaper

    assert _sample_path_is_cheaper(10, 10, 768)  # per-prompt challenge FID
    assert _sample_path_is_cheaper(10, 1000, 768)
    assert not _sample_path_is_cheaper(5000, 5000, 768)  # global FBD over many images


def test_single_sample_is_a_clear_error():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(rng.normal(size=(10, 8)), rng.normal(size=(1, 8)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(rng.normal(size=(10, 8)), rng.normal(size=(10, 9)))


def test_degenerate_subspace_is_exact_where_sqrtm_is_not():
    """Both sets in one 5-dimensional subspace of 64 dimensions: Σ1Σ2 has a 59-fold zero eigenvalue and
    ``scipy.linalg.sqrtm`` loses ~1e-6 relative. In an orthonormal basis of the data's own span (FD is invariant
    under rotations, and outside the span both covariances and the mean difference vanish) sqrtm is
    well-conditioned; all our paths match that value to 1e-9."""
    rng = np.random.default_rng(4)
    basis = rng.normal(size=(5, 64))
    f1, f2 = rng.normal(size=(200, 5)) @ basis, rng.normal(size=(150, 5)) @ basis + 0.5
    span = np.column_stack([np.linalg.svd(np.vstack([f1 - f1.mean(0), f2 - f2.mean(0)]))[2][:5].T,
                            f1.mean(0) - f2.mean(0)])
    q, _ = np.linalg.qr(span)
    exact = reference_fid(f1 @ q, f2 @ q)
    mu2, s2 = feature_statistics(f2)
    for value in (frechet_distance(f1, f2, "samples"), frechet_distance(f1, f2, "stats"),
                  frechet_distance_samples_to_stats(f1, mu2, s2)):
        assert value == pytest.approx(exact, rel=1e-9)
    assert reference_fid(f1, f2) == pytest.approx(exact, rel=1e-5)  # scipy's own error here is ~1e-6


@pytest.mark.parametrize("name,f1,f2", list(_cases()), ids=[c[0] for c in _cases()])
def test_paths_agree_with_each_other_tightly(name, f1, f2):
    a, b = frechet_distance(f1, f2, "samples"), frechet_distance(f1, f2, "stats")
    assert a == pytest.approx(b, rel=1e-10)


@pytest.mark.parametrize("method", ["samples", "stats", "auto"])
def test_identical_generated_images_give_the_exact_finite_value(method):
    """A prompt set of identical images has Σ_gen = 0, so FD = ‖μ_gen − μ_real‖² + tr Σ_real exactly (the sqrt term
    vanishes). msdm returns that value; the script's sqrtm of the zero matrix was NaN in older SciPy (scipy#7839)."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(20, 768)).astype(np.float32)
    one = rng.normal(size=(1, 768)).astype(np.float32)
    gen = np.repeat(one, 10, axis=0)
    r = real.astype(np.float64)
    exact = float(((one[0].astype(np.float64) - r.mean(0)) ** 2).sum() + np.trace(np.cov(r, rowvar=False)))
    got = frechet_distance(gen, real, method=method)
    assert np.isfinite(got) and got == pytest.approx(exact, rel=1e-12)
