"""TorchCoxPH (radiopath/evaluation/estimators/coxph.py) against scikit-survival's
CoxPHSurvivalAnalysis: coefficients, risks, survival functions, penalty and overflow."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from estimator_helpers import rel
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from radiopath.evaluation.estimators import TorchCoxPH


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
