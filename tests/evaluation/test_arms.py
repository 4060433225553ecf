"""Scoring one arm on every bootstrap replicate (radiopath/evaluation/arms.py): each replicate's
metrics equal scikit-survival's on the resampled patients, and missing predictions are named."""

from __future__ import annotations

import numpy as np
import pytest
from stats_helpers import arm_tables, oof_cohort, sksurv_metrics

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.arms import score_arm
from radiopath.evaluation.bootstrap import bootstrap_weights

# scikit-survival's own C-AUC divides by zero where a resample has no case before a time
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def test_every_replicate_equals_sksurv_on_the_resampled_patients():
    oof = oof_cohort()
    weights = bootstrap_weights(oof.event, 25, seed=3)
    preds, surv = arm_tables(oof, seed=1)
    arm = score_arm(oof, weights, preds, surv)
    checked = dict.fromkeys(["c_index", "c_ipcw", "c_auc", "ibs", "auc@5", "brier@5"], 0)
    with np.errstate(all="ignore"):
        for j, fs in enumerate(oof.folds):
            part = preds[(preds.fold == fs.fold) & (preds.model == "coxph")]
            risk = part.set_index("patient_id").loc[oof.patient_id[fs.test], "risk"].to_numpy()
            for b in range(weights.shape[0]):
                reference = sksurv_metrics(oof, fs, weights[b, fs.test], risk)
                for metric, value in reference.items():
                    if np.isfinite(value):
                        got = arm.values[("coxph", metric)][b, j]
                        assert got == pytest.approx(value, abs=1e-9), (metric, b, fs.fold)
                        checked[metric] += 1
    # row 0 (the data) and most replicates are defined for every metric
    assert min(checked.values()) >= 40, checked


def test_partial_predictions_are_named():
    oof = oof_cohort()
    preds, _ = arm_tables(oof, seed=1)
    first = oof.patient_id[oof.folds[0].test][0]
    with pytest.raises(RadiopathInputError, match=f"fold 0: predictions for .*{first}"):
        score_arm(oof, bootstrap_weights(oof.event, 5), preds[preds.patient_id != first])
