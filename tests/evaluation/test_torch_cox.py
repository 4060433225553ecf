"""The batched Cox solvers (radiopath/evaluation/torch_cox.py): one batched call with masks
equals separate fits, and p > n solves in the span of the samples."""

from __future__ import annotations

import numpy as np
import pytest
from estimator_helpers import rel
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from radiopath.evaluation.estimators import TorchCoxPH
from radiopath.evaluation.torch_cox import fit_cox_ridge
from radiopath.evaluation.torch_svm import fit_survival_svm, survival_ranks


def test_batched_ridge_equals_single_fits_with_masks():
    """One batched call with inner-fold sample weights and padded features = separate fits."""
    rng = np.random.default_rng(0)
    n, p = 60, 5
    X = rng.normal(size=(n, p))
    t = rng.exponential(np.exp(-X[:, 0]))
    e = rng.random(n) < 0.7
    w = np.ones((3, n))
    w[1, :20] = 0
    w[2, 30:] = 0
    Xpad = np.concatenate([X, np.zeros((n, 2))], 1)
    fmask = np.r_[np.ones(p), 0, 0]
    res = fit_cox_ridge(
        Xpad, t, e, [1.0, 2.0, 3.0], sample_weight=w, feature_mask=fmask, device="cpu"
    )
    for b, alpha in enumerate([1.0, 2.0, 3.0]):
        keep = w[b] > 0
        ref = CoxPHSurvivalAnalysis(alpha=alpha).fit(X[keep], Surv.from_arrays(e[keep], t[keep]))
        assert rel(res.coef[b, :p].numpy(), ref.coef_) < 1e-6
        assert np.all(res.coef[b, p:].numpy() == 0)
    ranks = survival_ranks(t, 0)
    svm = fit_survival_svm(
        Xpad, ranks, e, [0.5, 0.5, 0.5], sample_weight=w, feature_mask=fmask, device="cpu"
    )
    for b in range(3):
        keep = w[b] > 0
        # ranks of the subset keep their order, so pairs are the same as a fit on the subset
        sub_ranks = np.argsort(np.argsort(ranks[keep]))
        ref = fit_survival_svm(X[keep], sub_ranks, e[keep], 0.5, device="cpu")
        assert rel(svm.coef[b, :p].numpy(), ref.coef[0].numpy()) < 1e-6


@pytest.mark.parametrize("alpha", [0.5, 20.0])
def test_coxph_more_features_than_samples(alpha):
    """p > n runs Newton in the span of the samples; the solution is scikit-survival's."""
    rng = np.random.default_rng(1)
    n, p = 45, 70
    X = rng.normal(size=(n, p))
    t = np.round(rng.exponential(np.exp(-X[:, :3].sum(1))), 1) + 0.1  # with tied times
    e = rng.random(n) < 0.7
    y = Surv.from_arrays(e, t)
    ref = CoxPHSurvivalAnalysis(alpha=alpha).fit(X, y)
    est = TorchCoxPH(alpha=alpha, device="cpu").fit(X, y)
    assert rel(est.coef_, ref.coef_) < 1e-4
    # masked samples and padded features in the sample-space solver
    w = np.ones((2, n))
    w[1, :10] = 0
    res = fit_cox_ridge(
        np.c_[X, np.zeros((n, 3))],
        t,
        e,
        alpha,
        sample_weight=w,
        device="cpu",
        feature_mask=np.r_[np.ones(p), np.zeros(3)],
    )
    assert rel(res.coef[0, :p].numpy(), ref.coef_) < 1e-4
    sub = CoxPHSurvivalAnalysis(alpha=alpha).fit(X[10:], y[10:])
    assert rel(res.coef[1, :p].numpy(), sub.coef_) < 1e-4
    assert np.all(res.coef[:, p:].numpy() == 0)
