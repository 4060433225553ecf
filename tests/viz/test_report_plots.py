"""The report's figures: calibration numbers, survival at a horizon and numbers at risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from matplotlib.figure import Figure

from radiopath.viz.report_plots import (
    add_at_risk_counts,
    calibration_table,
    plot_calibration,
    plot_fold_spread,
    survival_at,
)

KEYS = {"aggregator": "sparra", "modalities": "wsi", "model": "coxph"}


def _survival(fold_grids: dict[int, list[float]], n: int = 4) -> pd.DataFrame:
    rows = []
    for fold, grid in fold_grids.items():
        for i in range(n):
            for j, t in enumerate(grid):
                rows.append(
                    {
                        **KEYS,
                        "fold": fold,
                        "patient_id": f"p{fold}{i}",
                        "t": t,
                        "survival": 1 - 0.1 * (j + 1) - 0.01 * i,
                    }
                )
    return pd.DataFrame(rows)


def test_survival_at_a_horizon_is_the_step_function_value():
    surv = _survival({0: [10, 20, 30], 1: [25, 35]})
    at = survival_at(surv, 27.0).set_index("patient_id").survival
    assert at["p00"] == pytest.approx(0.8)  # last grid time not after 27 is 20 (second step)
    assert at["p11"] == pytest.approx(0.89)  # fold 1: 25 is the first step
    assert set(survival_at(surv, 12.0).patient_id) == {
        f"p0{i}" for i in range(4)
    }  # fold 1 starts at 25


def test_calibration_observed_is_kaplan_meier_of_each_group():
    rng = np.random.default_rng(0)
    n = 60
    pids = [f"p{i}" for i in range(n)]
    time = rng.exponential(50, n) + 1
    event = (rng.random(n) < 0.8).astype(int)
    predicted = rng.random(n)
    preds = pd.DataFrame(
        {**KEYS, "fold": 0, "patient_id": pids, "time": time, "event": event, "risk": predicted}
    )
    surv = pd.DataFrame(
        {**KEYS, "fold": 0, "patient_id": pids, "t": 40.0, "survival": 1 - predicted}
    )
    table = calibration_table(preds, surv, 40.0, bins=3)
    assert list(table.n) == [20, 20, 20]
    order = np.argsort(predicted, kind="stable")
    for g, idx in enumerate(np.array_split(order, 3)):
        km = KaplanMeierFitter().fit(time[idx], event[idx])
        row = table[table.group == g].iloc[0]
        assert row.predicted == pytest.approx(predicted[idx].mean())
        assert row.observed == pytest.approx(1 - km.predict(40.0))


def test_numbers_at_risk_are_written_at_each_tick():
    time = np.array([1.0, 2.0, 4.0, 6.0, 9.0])
    km = KaplanMeierFitter().fit(time, np.ones(5))
    ax = Figure().add_subplot(1, 1, 1)
    ax.set_xlim(0, 10)
    ax.set_xticks([0, 5, 10])
    add_at_risk_counts(ax, [("group", km, "black")])
    texts = [t.get_text() for t in ax.texts]
    assert texts[-3:] == ["5", "2", "0"]  # at t = 0, 5, 10


def test_figures_are_written(tmp_path):
    table = pd.DataFrame([{**KEYS, "group": 0, "n": 5, "predicted": 0.2, "observed": 0.3}])
    assert plot_calibration(table, 40.0, tmp_path / "cal.png").exists()
    rows = [
        {**KEYS, "aggregator": a, "fold": f, "metric": k, "value": 0.5 + 0.1 * f}
        for a in ("sparra", "mean")
        for f in range(3)
        for k in ("c_index", "ibs")
    ]
    path = plot_fold_spread(pd.DataFrame(rows), tmp_path / "spread.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
