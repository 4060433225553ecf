"""Fold preparation for the downstream protocol: checks, screening, scaling, inner CV.

:func:`prepare_fold` fits everything on an outer fold's training split only (univariate Cox
screening, standardisation, the inner cross-validation splits) and transforms the test split
with it; it also sets the metric time grid and C-IPCW horizon from the outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sksurv.util import Surv

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import (
    EvaluationConfig,
    resolve_evaluation_config,
    screening_enabled,
)
from radiopath.evaluation.screening import select_features, univariate_cox_pvalues
from radiopath.io import FoldEmbeddings

__all__ = ["PreparedFold", "prepare_fold"]

# ----------------------------------------------------------------------------- data classes


@dataclass
class PreparedFold:
    """One outer fold after screening and scaling (fitted on its training split only)."""

    fold: int
    train_ids: np.ndarray
    test_ids: np.ndarray
    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    y_test_eval: np.ndarray
    features: np.ndarray
    pvalues: np.ndarray | None
    scaler: StandardScaler
    times: np.ndarray | None
    tau: float
    splits: list[tuple[np.ndarray, np.ndarray]]
    train_problem: str | None = None
    test_problem: str | None = None
    grid_problem: str | None = None

    @property
    def train_time(self) -> np.ndarray:
        return np.ascontiguousarray(self.y_train["time"], dtype=np.float64)

    @property
    def train_event(self) -> np.ndarray:
        return np.ascontiguousarray(self.y_train["event"], dtype=bool)


# ----------------------------------------------------------------------------- preparation


def _check_fold(fold: FoldEmbeddings) -> None:
    where = f"fold {fold.fold}"
    n = len(fold.patient_id)
    for name in ("split", "time", "event"):
        if len(getattr(fold, name)) != n:
            raise RadiopathInputError(
                f"{where}: {name} has {len(getattr(fold, name))} entries for {n} patients",
                field=name,
            )
    emb = np.asarray(fold.embedding)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise RadiopathInputError(
            f"{where}: embedding must be [n_patients={n}, d], got shape {emb.shape}",
            field="embedding",
        )
    splits = set(np.asarray(fold.split).astype(str).tolist())
    if not splits <= {"train", "test"}:
        raise RadiopathInputError(
            f"{where}: split must be 'train' or 'test', found {sorted(splits - {'train', 'test'})}",
            field="split",
        )
    for s in ("train", "test"):
        if s not in splits:
            raise RadiopathInputError(f"{where}: no patient in the {s} split", field="split")
    time = np.asarray(fold.time, dtype=np.float64)
    bad = ~np.isfinite(time) | (time <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RadiopathInputError(
            f"{where}: follow-up time must be > 0, got {time[i]!r}",
            patient_id=str(fold.patient_id[i]),
            field="time",
        )
    event = np.asarray(fold.event)
    bad = ~np.isin(event, (0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RadiopathInputError(
            f"{where}: event must be 0 or 1, got {event[i]!r}",
            patient_id=str(fold.patient_id[i]),
            field="event",
        )
    if not np.isfinite(emb).all():
        i = int(np.flatnonzero(~np.isfinite(emb).all(1))[0])
        raise RadiopathInputError(
            f"{where}: embedding contains NaN or inf",
            patient_id=str(fold.patient_id[i]),
            field="embedding",
        )


def _inner_splits(
    event: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    n = len(event)
    k = max(2, min(n_splits, n))
    n_events = int(event.sum())
    if min(n_events, n - n_events) >= k:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [(tr, va) for tr, va in cv.split(np.zeros(n), event)]
    cv = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in cv.split(np.zeros(n))]


def _time_grid(train_time, test_time, test_event, cfg) -> tuple[np.ndarray | None, str | None]:
    """Evaluation times: percentiles of the test event times inside both follow-ups."""
    lo = float(test_time.min())
    hi = float(min(test_time.max(), train_time.max()))
    ev = test_time[test_event & (test_time >= lo) & (test_time < hi)]
    if ev.size == 0:
        return None, "no test event inside the training follow-up: C-AUC and IBS are undefined"
    p_lo, p_hi = cfg.metrics.time_percentiles
    q = np.linspace(float(p_lo), float(p_hi), int(cfg.metrics.n_times))
    times = np.unique(np.percentile(ev, q))
    times = times[(times >= lo) & (times < hi)]
    if times.size == 0:
        return None, "no evaluation time inside the test and training follow-up"
    return times, None


def _follow_up_adjusted(y_test: np.ndarray, train_time: np.ndarray) -> np.ndarray:
    """Test outcomes clipped to the training follow-up, for C-AUC and IBS.

    A test patient observed beyond the last training time is a control at every evaluation
    time (all lie before it), so its case status and IPC weight never enter the C-AUC or
    Brier score; clipping its time to the last training time (and calling it censored
    there) leaves both metrics unchanged while sparing scikit-survival's check that the
    censoring distribution is defined at every test time.
    """
    t_max = float(train_time.max())
    time = y_test["time"].copy()
    event = y_test["event"].copy()
    beyond = time >= t_max
    time[beyond] = t_max
    event[beyond] = False
    return Surv.from_arrays(event, time)


def prepare_fold(
    fold: FoldEmbeddings,
    *,
    aggregator: str,
    config: Mapping | EvaluationConfig | None = None,
    seed: int = 0,
) -> PreparedFold:
    """Screen and standardise one fold on its training split; set up inner CV and metrics.

    Nothing here looks at the test split except to transform it with what the training
    split fitted, and to set the metric time grid and C-IPCW horizon from the outcomes
    (which, as in scikit-survival, must lie inside the test follow-up).
    """
    cfg = resolve_evaluation_config(config)
    _check_fold(fold)
    split = np.asarray(fold.split).astype(str)
    tr, te = split == "train", split == "test"
    emb = np.asarray(fold.embedding, dtype=np.float64)
    time = np.asarray(fold.time, dtype=np.float64)
    event = np.asarray(fold.event).astype(bool)
    ids = np.asarray(fold.patient_id).astype(str)
    y_train = Surv.from_arrays(event[tr], time[tr])
    y_test = Surv.from_arrays(event[te], time[te])
    train_problem = None
    if not event[tr].any():
        train_problem = (
            f"fold {fold.fold}: the training split has no events ({int(tr.sum())} patients, all "
            "censored); no survival model can be fitted"
        )
    pvalues = None
    features = np.arange(emb.shape[1])
    if screening_enabled(cfg, aggregator) and train_problem is None:
        scr = univariate_cox_pvalues(emb[tr], time[tr], event[tr])
        pvalues = scr.pvalue
        features = select_features(
            pvalues, float(cfg.screening.p_threshold), int(cfg.screening.min_features)
        )
    scaler = StandardScaler().fit(emb[tr][:, features])
    X_train = scaler.transform(emb[tr][:, features])
    X_test = scaler.transform(emb[te][:, features])
    test_problem = None
    n_test_events = int(event[te].sum())
    if n_test_events == 0:
        test_problem = (
            f"fold {fold.fold}: the test split has no events ({int(te.sum())} patients, all "
            "censored): C-index, C-IPCW, C-AUC and IBS are undefined"
        )
    times, grid_problem = (None, None)
    if test_problem is None and train_problem is None:
        times, grid_problem = _time_grid(time[tr], time[te], event[te], cfg)
    tau = float(min(time[tr].max(), time[te].max()))
    return PreparedFold(
        fold=int(fold.fold),
        train_ids=ids[tr],
        test_ids=ids[te],
        X_train=X_train,
        X_test=X_test,
        y_train=y_train,
        y_test=y_test,
        y_test_eval=_follow_up_adjusted(y_test, time[tr]),
        features=features,
        pvalues=pvalues,
        scaler=scaler,
        times=times,
        tau=tau,
        splits=_inner_splits(event[tr], int(cfg.cv.n_splits), seed + int(fold.fold)),
        train_problem=train_problem,
        test_problem=test_problem,
        grid_problem=grid_problem,
    )
