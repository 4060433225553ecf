"""TorchFastSurvivalSVM (radiopath/evaluation/estimators/fsvm.py) against scikit-survival's
FastSurvivalSVM, also with more features than samples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from estimator_helpers import rel
from sksurv.svm import FastSurvivalSVM
from sksurv.util import Surv

from radiopath.evaluation.estimators import TorchFastSurvivalSVM


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
