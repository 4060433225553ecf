"""Univariate Cox screening: Wald p-values as lifelines' CoxPHFitter (Efron ties)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter

from radiopath.evaluation.screening import select_features, univariate_cox_pvalues


def test_pvalues_match_lifelines(dataset):
    name, X, y, columns = dataset
    res = univariate_cox_pvalues(X, y["time"], y["event"])
    for j, col in enumerate(columns):
        df = pd.DataFrame({"x": X[:, j], "T": y["time"], "E": y["event"].astype(int)})
        cph = CoxPHFitter().fit(df, "T", "E", fit_options={"precision": 1e-12})
        ref = cph.summary.loc["x"]
        assert abs(res.pvalue[j] - ref["p"]) <= 1e-4 * ref["p"] + 1e-300, (name, col)
        assert abs(res.coef[j] - ref["coef"]) <= 1e-4 * abs(ref["coef"]) + 1e-9, (name, col)
        assert abs(res.se[j] - ref["se(coef)"]) <= 1e-4 * ref["se(coef)"], (name, col)
    assert res.converged.all()


def test_scale_invariance_and_constant_column():
    rng = np.random.default_rng(0)
    n = 80
    X = rng.normal(size=(n, 3))
    t = rng.exponential(np.exp(-X[:, 0]))
    e = rng.random(n) < 0.8
    a = univariate_cox_pvalues(X, t, e)
    b = univariate_cox_pvalues(np.c_[X * [10.0, 0.1, 3.0] + 7.0, np.full(n, 2.0)], t, e)
    np.testing.assert_allclose(b.pvalue[:3], a.pvalue, rtol=1e-8)
    np.testing.assert_allclose(b.coef[:3] * [10.0, 0.1, 3.0], a.coef, rtol=1e-8)
    assert b.pvalue[3] == 1.0  # a constant feature is never selected for its p-value
    assert a.pvalue[0] < 1e-6  # the planted feature


def test_select_features_threshold_and_minimum():
    p = np.array([0.5, 0.01, 0.19, 0.2, 0.9])
    np.testing.assert_array_equal(select_features(p, 0.2), [1, 2])
    np.testing.assert_array_equal(select_features(p, 0.001, min_features=1), [1])
    np.testing.assert_array_equal(select_features(p, 0.001, min_features=3), [1, 2, 3])
