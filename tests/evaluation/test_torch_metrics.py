"""The torch metrics agree with scikit-survival's to 1e-6, with its conventions and errors."""

from __future__ import annotations

import numpy as np
import pytest
import sksurv.metrics as sk
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.nonparametric import CensoringDistributionEstimator

import radiopath.evaluation.torch_metrics as tm


@pytest.fixture(scope="module")
def scored(dataset, split_within_follow_up):
    name, X, y, _ = dataset
    tr, te = split_within_follow_up(y, seed=3)
    model = CoxPHSurvivalAnalysis(alpha=1.0).fit(X[tr], y[tr])
    risk = model.predict(X[te])
    ev = y[te]["time"][y[te]["event"]]
    times = np.percentile(ev, np.linspace(10, 80, 8))
    surv = np.vstack([f(times) for f in model.predict_survival_function(X[te])])
    return name, y[tr], y[te], risk, times, surv


@pytest.mark.parametrize("rounding", [None, 1])
def test_harrell(scored, rounding):
    _, _, y_te, risk, _, _ = scored
    est = risk if rounding is None else np.round(risk, rounding)  # rounding makes tied risks
    a = sk.concordance_index_censored(y_te["event"], y_te["time"], est)
    b = tm.concordance_index_censored(y_te["event"], y_te["time"], est)
    assert abs(a[0] - b[0]) < 1e-6
    assert tuple(a[1:]) == tuple(b[1:])  # concordant, discordant, tied risk, tied time


@pytest.mark.parametrize("rounding", [None, 1])
def test_uno_ipcw(scored, rounding):
    _, y_tr, y_te, risk, _, _ = scored
    est = risk if rounding is None else np.round(risk, rounding)
    tau = float(np.quantile(y_te["time"], 0.8))
    for t in (None, tau):
        a = sk.concordance_index_ipcw(y_tr, y_te, est, tau=t)
        b = tm.concordance_index_ipcw(y_tr, y_te, est, tau=t)
        assert abs(a[0] - b[0]) < 1e-6


def test_cumulative_dynamic_auc(scored):
    _, y_tr, y_te, risk, times, surv = scored
    for est in (risk, np.round(risk, 1), 1 - surv):  # 1-D, tied, and time-dependent estimates
        a_scores, a_mean = sk.cumulative_dynamic_auc(y_tr, y_te, est, times)
        b_scores, b_mean = tm.cumulative_dynamic_auc(y_tr, y_te, est, times)
        np.testing.assert_allclose(b_scores, a_scores, atol=1e-6)
        assert abs(a_mean - b_mean) < 1e-6
    a = sk.cumulative_dynamic_auc(y_tr, y_te, risk, times[3])
    b = tm.cumulative_dynamic_auc(y_tr, y_te, risk, times[3])
    assert abs(a[1] - b[1]) < 1e-6


def test_brier_and_integrated_brier(scored):
    _, y_tr, y_te, _, times, surv = scored
    t_a, bs_a = sk.brier_score(y_tr, y_te, surv, times)
    t_b, bs_b = tm.brier_score(y_tr, y_te, surv, times)
    np.testing.assert_allclose(bs_b, bs_a, atol=1e-6)
    assert (
        abs(
            sk.integrated_brier_score(y_tr, y_te, surv, times)
            - tm.integrated_brier_score(y_tr, y_te, surv, times)
        )
        < 1e-6
    )


def test_censoring_distribution(scored):
    _, y_tr, y_te, _, _, _ = scored
    ref = CensoringDistributionEstimator().fit(y_tr)
    km = tm.KaplanMeier(y_tr["event"], y_tr["time"], reverse=True, device="cpu")
    t = np.r_[0.0, np.sort(y_te["time"]), y_tr["time"].min(), y_tr["time"].max()]
    np.testing.assert_allclose(km.predict_proba(t).numpy(), ref.predict_proba(t), atol=1e-12)


def test_batched_estimates_score_each_row(scored):
    _, _, y_te, risk, _, _ = scored
    rng = np.random.default_rng(0)
    draws = np.vstack([risk, rng.permutation(risk), -risk])
    c = tm.concordance_index_censored(y_te["event"], y_te["time"], draws)[0]
    for k in range(3):
        assert (
            abs(
                float(c[k])
                - sk.concordance_index_censored(y_te["event"], y_te["time"], draws[k])[0]
            )
            < 1e-12
        )
    assert abs(float(c[0]) + float(c[2]) - 1.0) < 1e-12  # reversing the risks mirrors C (no ties)


def test_same_errors_as_sksurv(scored):
    _, y_tr, y_te, risk, times, _ = scored
    censored = y_te["event"].copy()
    censored[:] = False
    with pytest.raises(ValueError, match="All samples are censored"):
        tm.concordance_index_censored(censored, y_te["time"], risk)
    late = np.array([y_te["time"].max() + 1.0])
    with pytest.raises(ValueError, match="within follow-up time of test data"):
        tm.cumulative_dynamic_auc(y_tr, y_te, risk, late)
    with pytest.raises(ValueError, match="At least two time points"):
        tm.integrated_brier_score(y_tr, y_te, np.ones((len(y_te), 1)), times[:1])
