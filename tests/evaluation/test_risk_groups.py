"""Kaplan-Meier risk groups (radiopath/evaluation/risk_groups.py) against lifelines."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from radiopath.evaluation.risk_groups import km_risk_groups


def test_km_risk_groups_match_lifelines():
    rng = np.random.default_rng(0)
    train_risk = rng.normal(size=100)
    test_risk = rng.normal(size=60)
    time = rng.exponential(np.exp(-test_risk))
    event = rng.random(60) < 0.8
    groups, p = km_risk_groups(train_risk, test_risk, time, event, split="mean")
    high = test_risk > train_risk.mean()
    np.testing.assert_array_equal(groups.high, high)
    ref = logrank_test(time[high], time[~high], event[high], event[~high]).p_value
    assert p == pytest.approx(ref, rel=1e-12) and p < 0.05  # the planted risk separates
    km = KaplanMeierFitter().fit(time[high], event[high])
    np.testing.assert_allclose(
        groups.km_high.survival_function_.to_numpy(), km.survival_function_.to_numpy()
    )
    groups, _ = km_risk_groups(train_risk, test_risk, time, event, split="median")
    np.testing.assert_array_equal(groups.high, test_risk > np.median(train_risk))
    fig = groups.plot()
    assert "log-rank p" in fig.axes[0].get_title()
    _, p = km_risk_groups(train_risk, test_risk + 100, time, event)
    assert np.isnan(p)  # one empty group: no test
