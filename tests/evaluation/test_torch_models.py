"""The torch survival models solve scikit-survival's problems: same coefficients and risks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.svm import FastSurvivalSVM
from sksurv.util import Surv

from radiopath.evaluation.torch_models import (
    TorchCoxnet,
    TorchCoxPH,
    TorchFastSurvivalSVM,
    fit_cox_ridge,
    fit_survival_svm,
    survival_ranks,
)


def rel(a, b):
    """Largest absolute difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("alpha", [0.1, 10.0])
def test_coxph_matches_sksurv(dataset, alpha):
    name, X, y, _ = dataset
    ref = CoxPHSurvivalAnalysis(alpha=alpha).fit(X, y)
    est = TorchCoxPH(alpha=alpha, device="cpu").fit(X, y)
    assert rel(est.coef_, ref.coef_) < 1e-4, name
    assert rel(est.predict(X), ref.predict(X)) < 1e-4
    times = ref.unique_times_[[5, len(ref.unique_times_) // 2, -5]]
    s_ref = np.vstack([f(times) for f in ref.predict_survival_function(X[:20])])
    s_est = np.vstack([f(times) for f in est.predict_survival_function(X[:20])])
    np.testing.assert_allclose(s_est, s_ref, rtol=1e-4, atol=1e-8)


def test_coxph_penalty_scaling_is_sksurvs(dataset):
    """The ridge term is alpha/2 ||b||^2 against the (unnormalised) log partial likelihood:
    the gradient of -l(b) + alpha/2 ||b||^2, computed independently, vanishes at the fit."""
    _, X, y, _ = dataset
    alpha = 5.0
    b = TorchCoxPH(alpha=alpha, device="cpu").fit(X, y).coef_
    t, e = y["time"], y["event"]
    eta = X @ b
    grad = (
        -(
            X[e]
            - np.vstack(
                [
                    (np.exp(eta[t >= ti])[:, None] * X[t >= ti]).sum(0) / np.exp(eta[t >= ti]).sum()
                    for ti in t[e]
                ]
            )
        ).sum(0)
        + alpha * b
    )
    assert np.max(np.abs(grad)) < 1e-5 * np.abs(X).sum()


def test_coxnet_path_matches_sksurv(dataset):
    name, X, y, _ = dataset
    ref = CoxnetSurvivalAnalysis(l1_ratio=0.5, n_alphas=30, tol=1e-12).fit(X, y)
    est = TorchCoxnet(l1_ratio=0.5, n_alphas=30, tol=1e-10, device="cpu").fit(X, y)
    assert est.alphas_.shape == ref.alphas_.shape, name  # same early stop of the path
    np.testing.assert_allclose(est.alphas_, ref.alphas_, rtol=1e-10)
    assert rel(est.coef_, ref.coef_) < 1e-4
    # an alpha between two path points: the same interpolation
    a = 0.5 * (ref.alphas_[3] + ref.alphas_[4])
    assert rel(est.predict(X, alpha=a), ref.predict(X, alpha=a)) < 1e-4
    assert rel(est.offset_, ref.offset_) < 1e-4


@pytest.mark.parametrize("l1_ratio", [0.2, 0.9])
def test_coxnet_single_alpha_and_baseline(dataset, l1_ratio):
    _, X, y, _ = dataset
    alpha = 0.02
    ref = CoxnetSurvivalAnalysis(
        l1_ratio=l1_ratio, alphas=[alpha], tol=1e-12, fit_baseline_model=True
    ).fit(X, y)
    est = TorchCoxnet(
        l1_ratio=l1_ratio, alphas=[alpha], tol=1e-10, fit_baseline_model=True, device="cpu"
    ).fit(X, y)
    assert rel(est.coef_, ref.coef_) < 1e-4
    # the lasso part really zeroes coefficients, as in scikit-survival
    np.testing.assert_array_equal(np.abs(est.coef_) < 1e-9, np.abs(ref.coef_) < 1e-9)
    times = np.quantile(y["time"][y["event"]], [0.2, 0.5])
    s_ref = np.vstack([f(times) for f in ref.predict_survival_function(X[:10])])
    s_est = np.vstack([f(times) for f in est.predict_survival_function(X[:10])])
    np.testing.assert_allclose(s_est, s_ref, rtol=1e-4)


@pytest.mark.parametrize("alpha", [2.0**-6, 1.0])
def test_fast_survival_svm_matches_sksurv(dataset, alpha):
    name, X, y, _ = dataset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = FastSurvivalSVM(
            alpha=alpha, optimizer="avltree", max_iter=200, tol=1e-12, random_state=0
        ).fit(X, y)
    est = TorchFastSurvivalSVM(alpha=alpha, random_state=0, device="cpu").fit(X, y)
    assert rel(est.coef_, ref.coef_) < 1e-4, name
    assert rel(est.predict(X), ref.predict(X)) < 1e-4


def test_survival_ranks_break_ties_like_sksurv():
    from sksurv.svm.survival_svm import BaseSurvivalSVM

    time = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0, 5.0])
    order = BaseSurvivalSVM._argsort_and_resolve_ties(time, np.random.RandomState(7))
    ranks = survival_ranks(time, 7)
    np.testing.assert_array_equal(np.argsort(ranks), order)
    assert sorted(ranks.tolist()) == list(range(len(time)))


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


def test_overflow_is_an_arithmetic_error():
    """A perfectly separating feature without penalty: sksurv raises, so do we (no garbage)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    t = np.exp(-5 * x)
    e = np.ones(40, bool)
    e[::4] = False
    X = np.c_[50 * x, rng.normal(size=(40, 2))]
    y = Surv.from_arrays(e, t)
    with pytest.raises(ArithmeticError, match="increasing alpha"):
        TorchCoxPH(alpha=0.0, device="cpu").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            CoxPHSurvivalAnalysis(alpha=0.0).fit(X, y)
    # with a penalty both agree again
    ref = CoxPHSurvivalAnalysis(alpha=1.0).fit(X, y)
    assert rel(TorchCoxPH(alpha=1.0, device="cpu").fit(X, y).coef_, ref.coef_) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(dataset):
    _, X, y, _ = dataset
    for cls, kw in (
        (TorchCoxPH, {"alpha": 1.0}),
        (TorchCoxnet, {"l1_ratio": 0.5, "n_alphas": 10}),
        (TorchFastSurvivalSVM, {"alpha": 0.1, "random_state": 0}),
    ):
        a = cls(device="cpu", **kw).fit(X, y).coef_
        b = cls(device="cuda", **kw).fit(X, y).coef_
        assert rel(b, a) < 1e-6


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


def test_survival_svm_more_features_than_samples():
    rng = np.random.default_rng(2)
    n, p = 40, 64
    X = rng.normal(size=(n, p))
    t = np.round(rng.exponential(np.exp(-X[:, :3].sum(1))), 1) + 0.1
    e = rng.random(n) < 0.7
    y = Surv.from_arrays(e, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = FastSurvivalSVM(
            alpha=0.1, optimizer="avltree", max_iter=200, tol=1e-12, random_state=3
        ).fit(X, y)
    est = TorchFastSurvivalSVM(alpha=0.1, random_state=3, device="cpu").fit(X, y)
    assert rel(est.coef_, ref.coef_) < 1e-4
