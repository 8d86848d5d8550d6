"""msdm.utility metrics and intervals against independent references (torchmetrics, scikit-learn, scipy)."""

import numpy as np
import pytest
import torch

from msdm.utility.metrics import METRICS, classification_metrics
from msdm.utility.stats import (
    mean_std,
    metrics_on_resamples,
    paired_bootstrap,
    paired_t_interval,
    seed_draws,
    stratified_bootstrap_indices,
)


def _multiclass(n=90, c=3, seed=0, ties=False):
    g = torch.Generator().manual_seed(seed)
    target = torch.arange(n) % c
    logits = torch.randn(n, c, generator=g) + 1.5 * torch.nn.functional.one_hot(target, c)
    probs = torch.softmax(logits, -1)
    if ties:
        probs = (probs * 4).round() / 4  # many equal scores: AUROC must average tied ranks
    return probs, target


@pytest.mark.parametrize("c,ties", [(2, False), (3, False), (3, True)])
def test_point_metrics_equal_scikit_learn(c, ties):
    sk = pytest.importorskip("sklearn.metrics")
    probs, target = _multiclass(c=c, ties=ties)
    m = classification_metrics(probs, target)
    pred = probs.argmax(1).numpy()
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(target, pred))
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(target, pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(target, pred, average="macro"))
    # one-vs-rest macro AUROC: the mean of the per-class binary AUROCs (sklearn's "ovr" needs rows summing to 1)
    ref_auc = np.mean([sk.roc_auc_score(target == k, probs[:, k]) for k in range(c)])
    assert m["auroc"] == pytest.approx(ref_auc, abs=1e-6)


def test_multilabel_metrics_equal_scikit_learn():
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(80, 3, generator=g) < 0.4).long()
    probs = torch.sigmoid(torch.randn(80, 3, generator=g) + 2.0 * (target - 0.5))
    m = classification_metrics(probs, target, multilabel=True)
    dec = (probs > 0.5).long().numpy()
    t = target.numpy()
    bal = np.mean([sk.balanced_accuracy_score(t[:, j], dec[:, j]) for j in range(3)])
    assert m["accuracy"] == pytest.approx((dec == t).mean())
    assert m["balanced_accuracy"] == pytest.approx(bal)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(t, dec, average="macro"))
    assert m["auroc"] == pytest.approx(sk.roc_auc_score(t, probs.numpy(), average="macro"), abs=1e-6)


@pytest.mark.parametrize("c,ties,multilabel", [(2, False, False), (3, True, False), (3, False, True)])
def test_vectorised_bootstrap_metrics_equal_torchmetrics_on_every_resample(c, ties, multilabel):
    if multilabel:
        g = torch.Generator().manual_seed(2)
        target = (torch.rand(60, c, generator=g) < 0.5).long()
        probs = torch.sigmoid(torch.randn(60, c, generator=g) + 1.5 * (target - 0.5))
        strata = [tuple(np.flatnonzero(r)) for r in target.numpy()]
    else:
        probs, target = _multiclass(n=60, c=c, ties=ties)
        strata = target.tolist()
    idx = stratified_bootstrap_indices(strata, 8, seed=5)
    fast = metrics_on_resamples(probs.numpy(), target.numpy(), idx, multilabel)
    for b in range(8):
        ref = classification_metrics(probs[idx[b]], target[idx[b]], multilabel)
        for m in METRICS:
            assert fast[m][b] == pytest.approx(ref[m], abs=1e-6), (m, b)


def test_stratified_resamples_keep_class_counts():
    strata = [0] * 7 + [1] * 3
    idx = stratified_bootstrap_indices(strata, 50, seed=0)
    assert idx.shape == (50, 10)
    for row in idx:
        assert sorted(np.asarray(strata)[row].tolist()) == sorted(strata)
    assert len({tuple(r) for r in idx}) > 1


def test_paired_t_interval_equals_scipy_ttest_rel():
    from scipy.stats import ttest_rel

    a = np.array([0.71, 0.74, 0.69, 0.75, 0.73])
    b = np.array([0.66, 0.70, 0.68, 0.70, 0.69])
    ci = ttest_rel(a, b).confidence_interval(0.95)
    assert paired_t_interval(list(a - b)) == pytest.approx((ci.low, ci.high))
    assert paired_t_interval([0.1]) is None
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert mean_std([5.0]) == (5.0, 0.0)


def test_paired_bootstrap_sees_no_difference_between_equal_arms_and_a_clear_one_otherwise():
    probs, target = _multiclass(n=120, c=2, seed=3)
    idx = stratified_bootstrap_indices(target.tolist(), 400, seed=0)
    base = [metrics_on_resamples(probs.numpy(), target.numpy(), idx) for _ in range(3)]
    draws = seed_draws(3, 400, seed=0)
    same = paired_bootstrap(base, base, draws)
    assert all(same[m] == (0.0, 0.0) for m in METRICS)
    perfect = torch.nn.functional.one_hot(target, 2).float() * 0.9 + 0.05
    better = [metrics_on_resamples(perfect.numpy(), target.numpy(), idx) for _ in range(3)]
    ci = paired_bootstrap(better, base, draws)
    assert all(ci[m][0] > 0 for m in METRICS)
    worse = paired_bootstrap(base, better, None)  # one seed: only the test images are resampled
    assert all(worse[m][1] < 0 for m in METRICS)
