"""Out-of-fold cohorts and arm tables shared by the tests of the bootstrap statistics
(test_arms.py, test_bootstrap.py, test_comparisons.py); imported by name (tests/evaluation/
is on ``sys.path``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sksurv.metrics as M
from sksurv.util import Surv

from radiopath.evaluation.bootstrap import out_of_fold
from radiopath.evaluation.protocol import _follow_up_adjusted
from radiopath.training.folds import make_folds

HORIZON = 5.0


def oof_cohort(n=60, seed=0, repeats=1):
    """``n`` patients with tied times in 3 stratified folds (x ``repeats``), as the protocol
    scored them (a horizon at :data:`HORIZON`)."""
    rng = np.random.default_rng(seed)
    time = np.round(rng.exponential(10, n), 1) + 0.1  # rounded: tied times
    event = rng.uniform(size=n) < 0.6
    ids = [f"p{i:03d}" for i in range(n)]
    folds = make_folds(ids, event.astype(int), 3, seed=1, repeats=repeats)
    outcomes = pd.DataFrame({"patient_id": ids, "time": time, "event": event.astype(int)})
    return out_of_fold(folds, outcomes, {"metrics": {"horizons": [HORIZON]}})


def survival(risk, t):
    """An exponential survival curve whose hazard grows with ``risk``."""
    return np.exp(-t / 10 * np.exp(risk))


def arm_tables(oof, seed, name="x", same_as=None):
    """Predictions (with tied risks) and survival curves at each fold's grid and the horizon."""
    rng = np.random.default_rng(seed)
    rows, srows = [], []
    for fs in oof.folds:
        pid = oof.patient_id[fs.test]
        for model in ("coxph", "fsvm"):
            risk = rng.normal(size=len(pid))
            risk[:3] = risk[0]  # tied risks
            if same_as is not None:
                part = same_as[(same_as.fold == fs.fold) & (same_as.model == model)]
                risk = part.set_index("patient_id").loc[pid, "risk"].to_numpy()
            rows.append(
                pd.DataFrame(
                    {
                        "aggregator": name,
                        "modalities": "wsi",
                        "model": model,
                        "fold": fs.fold,
                        "patient_id": pid,
                        "time": fs.time,
                        "event": fs.event.astype(int),
                        "risk": risk,
                    }
                )
            )
            if model == "coxph":
                for t in [*fs.times, HORIZON]:
                    srows.append(
                        pd.DataFrame(
                            {
                                "model": model,
                                "fold": fs.fold,
                                "patient_id": pid,
                                "t": t,
                                "survival": survival(risk, t),
                            }
                        )
                    )
    return pd.concat(rows, ignore_index=True), pd.concat(srows, ignore_index=True)


def sksurv_metrics(oof, fs, counts, risk):
    """scikit-survival on the resampled data itself (each patient repeated ``counts`` times)."""
    rep = np.repeat(np.arange(len(fs.test)), counts.astype(int))
    train = np.ones(len(oof.patient_id), bool)
    train[fs.test] = False
    y_train = Surv.from_arrays(oof.event[train], oof.time[train])
    y_test = Surv.from_arrays(fs.event[rep], fs.time[rep])
    y_eval = _follow_up_adjusted(Surv.from_arrays(fs.event, fs.time), oof.time[train])[rep]
    r = risk[rep]
    out = {}

    def attempt(name, fn):
        try:
            out[name] = float(fn())
        except ValueError:  # undefined on this resample (e.g. a time outside its follow-up)
            pass

    attempt("c_index", lambda: M.concordance_index_censored(y_test["event"], y_test["time"], r)[0])
    attempt("c_ipcw", lambda: M.concordance_index_ipcw(y_train, y_test, r, tau=fs.tau)[0])
    attempt("c_auc", lambda: M.cumulative_dynamic_auc(y_train, y_eval, r, fs.times)[1])
    surv = np.column_stack([survival(risk, t) for t in fs.times])[rep]
    attempt("ibs", lambda: M.integrated_brier_score(y_train, y_eval, surv, fs.times))
    attempt("auc@5", lambda: M.cumulative_dynamic_auc(y_train, y_eval, r, [HORIZON])[0][0])
    s5 = survival(risk, HORIZON)[rep]
    attempt("brier@5", lambda: M.brier_score(y_train, y_eval, s5, [HORIZON])[1][0])
    return out
