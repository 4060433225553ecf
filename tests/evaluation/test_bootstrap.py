"""The bootstrap of the out-of-fold predictions (radiopath/evaluation/bootstrap.py): resamples
stratified by event, and the intervals their percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from stats_helpers import arm_tables, oof_cohort, sksurv_metrics

from radiopath.evaluation.arms import score_arm
from radiopath.evaluation.bootstrap import bootstrap_weights
from radiopath.evaluation.comparisons import intervals

# scikit-survival's own C-AUC divides by zero where a resample has no case before a time
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def test_weights_are_stratified_by_event_and_intervals_are_numpy_percentiles():
    oof = oof_cohort(repeats=2)
    weights = bootstrap_weights(oof.event, 40, seed=0)
    assert (weights[0] == 1).all()
    assert (weights[1:, oof.event].sum(1) == oof.event.sum()).all()
    assert (weights[1:, ~oof.event].sum(1) == (~oof.event).sum()).all()
    preds, surv = arm_tables(oof, seed=2)
    arm = score_arm(oof, weights, preds, surv)
    assert len(arm.fold_ids) == 6  # 3 folds x 2 repeats
    # independent: per replicate, the mean over folds of sksurv's C-index on the resample
    reps = []
    for b in range(weights.shape[0]):
        values = []
        for fs in oof.folds:
            part = preds[(preds.fold == fs.fold) & (preds.model == "fsvm")]
            risk = part.set_index("patient_id").loc[oof.patient_id[fs.test], "risk"].to_numpy()
            values.append(sksurv_metrics(oof, fs, weights[b, fs.test], risk)["c_index"])
        reps.append(np.mean(values))
    row = intervals(arm).set_index(["model", "metric"]).loc[("fsvm", "c_index")]
    assert row["estimate"] == pytest.approx(reps[0], abs=1e-12)
    lo, hi = np.percentile(reps[1:], [2.5, 97.5])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert row["n_folds"] == 6 and row["n_boot"] == 40
    # the average over models is the mean of the models' statistics
    table = intervals(arm).set_index(["model", "metric"])
    avg = table.loc[("avg", "c_index"), "estimate"]
    assert avg == pytest.approx(
        (table.loc[("fsvm", "c_index"), "estimate"] + table.loc[("coxph", "c_index"), "estimate"])
        / 2
    )
