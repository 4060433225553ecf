"""Fixed-horizon binary metrics: labels, parsing, thresholds and sklearn's metrics on a
hand-made example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.horizon import (
    binary_horizon_metrics,
    check_horizon,
    horizon_labels,
    horizon_threshold,
    parse_horizon,
    run_horizon_metrics,
)
from radiopath.io import FoldEmbeddings, write_fold_embeddings

# horizon 10: events by 10 -> 1, followed beyond 10 -> 0, censored by 10 -> excluded
TIME = np.array([2.0, 5.0, 10.0, 12.0, 15.0, 3.0, 10.0, 20.0, 11.0])
EVENT = np.array([1, 1, 1, 1, 0, 0, 0, 1, 0])
LABEL = np.array([1, 1, 1, 0, 0, -1, -1, 0, 0])  # -1: no label
SCORE = np.array([0.9, 0.2, 0.7, 0.6, 0.1, 0.5, 0.3, 0.4, 0.8])


def test_horizon_labels():
    label, usable = horizon_labels(TIME, EVENT, 10.0)
    np.testing.assert_array_equal(usable, LABEL >= 0)
    np.testing.assert_array_equal(label[usable], LABEL[LABEL >= 0])


def test_binary_metrics_by_hand():
    out = binary_horizon_metrics(TIME, EVENT, SCORE, 10.0, threshold=0.55)
    keep = LABEL >= 0
    y, s = LABEL[keep], SCORE[keep]
    predicted = (s > 0.55).astype(int)  # 0.9 0.2 0.7 0.6 0.1 0.4 0.8 -> 1 0 1 1 0 0 1
    np.testing.assert_array_equal(predicted, [1, 0, 1, 1, 0, 0, 1])
    # by hand: TP 2 (0.9, 0.7), FN 1 (0.2), FP 2 (0.6, 0.8), TN 2 (0.1, 0.4)
    assert out["accuracy"] == pytest.approx(4 / 7)
    assert out["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 4) / 2)
    assert out["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    # ROC-AUC by counting pairs: positives 0.9 0.2 0.7 against negatives 0.6 0.1 0.4 0.8
    pairs = [(p > n) for p in (0.9, 0.2, 0.7) for n in (0.6, 0.1, 0.4, 0.8)]
    assert out["roc_auc"] == pytest.approx(np.mean(pairs))
    assert out["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert out["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert (out["n_used"], out["n_excluded"], out["n_positive"]) == (7, 2, 3)
    assert out["predicted_positive"] == 4


@pytest.mark.parametrize(
    "value, unit, expected",
    [
        ("5y", "days", 5 * 365.25),
        ("5 years", "months", 60.0),
        ("60m", "years", 5.0),
        ("18 months", "months", 18.0),
        ("26w", "days", 182.0),
        ("100d", "days", 100.0),
        ("1826", "days", 1826.0),
        (36, "months", 36.0),
        (2.5, "years", 2.5),
    ],
)
def test_parse_horizon(value, unit, expected):
    assert parse_horizon(value, time_unit=unit) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["5 lightyears", "y5", "", "-3y", 0, -1, None, True])
def test_parse_horizon_refuses(value):
    with pytest.raises(RadiopathInputError) as err:
        parse_horizon(value)
    assert err.value.field == "horizon"


def test_parse_horizon_unknown_unit():
    with pytest.raises(RadiopathInputError) as err:
        parse_horizon("5y", time_unit="weeks")
    assert err.value.field == "time_unit"


def test_horizon_beyond_follow_up_is_refused():
    with pytest.raises(RadiopathInputError) as err:
        check_horizon(TIME, EVENT, 25.0)
    assert err.value.field == "horizon" and "beyond" in str(err.value)
    with pytest.raises(RadiopathInputError) as err:
        check_horizon(TIME, EVENT, 1.0)
    assert err.value.field == "horizon"
    check_horizon(TIME, EVENT, 10.0)


def test_cox_threshold_matches_kaplan_meier_event_rate():
    from lifelines import KaplanMeierFitter

    rng = np.random.default_rng(0)
    time = rng.exponential(10, 200)
    event = rng.uniform(size=200) < 0.7
    risk = rng.normal(size=200)
    threshold = horizon_threshold(risk, time, event, 8.0)
    rate = 1 - KaplanMeierFitter().fit(time, event).survival_function_at_times(8.0).iloc[0]
    assert (risk > threshold).mean() == pytest.approx(rate, abs=0.5 / 200)
    assert horizon_threshold(risk, kind="binary") == 0.0
    with pytest.raises(RadiopathInputError):
        horizon_threshold(risk, time, event, 8.0, kind="logistic")


def test_run_horizon_metrics_uses_each_folds_training_risks(tmp_path):
    rng = np.random.default_rng(1)
    n = 60
    time = rng.exponential(10, n) + 0.1
    event = (rng.uniform(size=n) < 0.8).astype(int)
    risk = -np.log(time) + rng.normal(0, 0.5, n)
    ids = np.array([f"p{i}" for i in range(n)])
    fold = np.arange(n) % 2
    rows = []
    for k in (0, 1):
        test = fold == k
        split = np.where(test, "test", "train")
        # the training risks of fold 1 are shifted: its threshold must move with them
        fold_risk = risk + (5.0 if k == 1 else 0.0) * (~test)
        write_fold_embeddings(
            tmp_path / "embeddings" / f"fold_{k}.npz",
            FoldEmbeddings(k, ids, split, time, event, np.zeros((n, 2)), fold_risk),
        )
        rows.append(
            pd.DataFrame(
                {
                    "aggregator": "sparra",
                    "modalities": "wsi",
                    "repeat": 0,
                    "fold": k,
                    "patient_id": ids[test],
                    "time": time[test],
                    "event": event[test],
                    "risk": risk[test],
                }
            )
        )
    pd.concat(rows).to_csv(tmp_path / "risks.csv", index=False)
    table = run_horizon_metrics(tmp_path, 8.0).set_index("fold")
    assert list(table.index) == ["0", "1", "all"]
    for k in (0, 1):
        train = fold != k
        expected = horizon_threshold(risk[train] + 5.0 * k, time[train], event[train], 8.0)
        assert table.loc[str(k), "threshold"] == pytest.approx(expected)
        test = fold == k
        again = binary_horizon_metrics(time[test], event[test], risk[test], 8.0, expected)
        assert table.loc[str(k), "f1"] == pytest.approx(again["f1"])
    pooled = table.loc["all"]
    assert pooled.n_used + pooled.n_excluded == n
    assert pooled.predicted_positive == table.loc[["0", "1"], "predicted_positive"].sum()
