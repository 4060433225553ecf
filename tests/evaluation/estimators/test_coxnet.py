"""TorchCoxnet (radiopath/evaluation/estimators/coxnet.py) against scikit-survival's
CoxnetSurvivalAnalysis: the alpha path, one alpha and the baseline model."""

from __future__ import annotations

import numpy as np
import pytest
from estimator_helpers import rel
from sksurv.linear_model import CoxnetSurvivalAnalysis

from radiopath.evaluation.estimators import TorchCoxnet


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
