"""The outer folds as the protocol scored them, and the patient-level bootstrap replicates.

:func:`out_of_fold` sets up every outer fold of a run -- its test patients, the censoring
distribution of its training patients, its C-IPCW horizon and its time grid -- exactly as
:mod:`radiopath.evaluation.protocol` scored it; :func:`bootstrap_weights` draws the
replicates as patient multiplicities, stratified by event. Part of
:mod:`radiopath.evaluation.stats`, which re-exports these names.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sksurv.util import Surv

from radiopath.evaluation.config import EvaluationConfig, resolve_evaluation_config
from radiopath.evaluation.prepare import _follow_up_adjusted, _time_grid
from radiopath.evaluation.torch_metrics import KaplanMeier

log = logging.getLogger(__name__)

__all__ = ["FoldSetup", "OutOfFold", "bootstrap_weights", "out_of_fold"]


@dataclass
class FoldSetup:
    """What scoring one outer fold needs besides the predictions (fixed over replicates)."""

    fold: int
    repeat: int
    test: np.ndarray  # positions of the fold's test patients in the cohort arrays
    time: np.ndarray  # test outcomes (C-index, C-IPCW)
    event: np.ndarray
    time_eval: np.ndarray  # follow-up-adjusted test outcomes (C-AUC, IBS, horizons)
    event_eval: np.ndarray
    times: np.ndarray | None  # the protocol's time grid (None: C-AUC / IBS undefined)
    tau: float
    cens: KaplanMeier | None  # censoring distribution of the training patients
    problem: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)


@dataclass
class OutOfFold:
    """The cohort and its outer folds, set up as the protocol scored them."""

    patient_id: np.ndarray
    time: np.ndarray
    event: np.ndarray
    folds: list[FoldSetup]
    horizons: list[float]
    tied_tol: float

    @property
    def fold_ids(self) -> list[int]:
        return [f.fold for f in self.folds]


def out_of_fold(
    folds: pd.DataFrame, outcomes: pd.DataFrame, config: Mapping | EvaluationConfig | None = None
) -> OutOfFold:
    """Set up every outer fold: test patients, training censoring distribution, time grid.

    Parameters
    ----------
    folds
        ``patient_id, [repeat,] fold`` (``folds.csv``). A fold's training patients are the
        other patients of its repeat.
    outcomes
        ``patient_id, time, event`` of the patients.
    config
        The evaluation configuration the metrics were computed with (its ``metrics``
        section: time grid percentiles, ``n_times``, ``tied_tol``, ``horizons``).
    """
    cfg = resolve_evaluation_config(config)
    folds = folds if "repeat" in folds.columns else folds.assign(repeat=0)
    folds = folds.assign(patient_id=folds["patient_id"].astype(str))
    known = outcomes.assign(patient_id=outcomes["patient_id"].astype(str)).drop_duplicates(
        "patient_id"
    )
    missing = sorted(set(folds["patient_id"]) - set(known["patient_id"]))
    if missing:
        log.warning(
            "%d patient(s) of the folds have no outcome in the predictions (first: %s); "
            "left out of the training censoring distributions",
            len(missing),
            missing[:3],
        )
        folds = folds[~folds["patient_id"].isin(missing)]
    ids = np.array(sorted(set(folds["patient_id"])))
    pos = {p: i for i, p in enumerate(ids)}
    known = known.set_index("patient_id").loc[ids]
    time = known["time"].to_numpy(dtype=np.float64)
    event = known["event"].to_numpy().astype(bool)
    setups = []
    for k, part in folds.groupby("fold", sort=True):
        repeat = int(part["repeat"].iloc[0])
        same = folds[folds["repeat"] == repeat]
        test = np.array([pos[p] for p in part["patient_id"]])
        train = np.array([pos[p] for p in same.loc[same["fold"] != k, "patient_id"]])
        tr_t, tr_e, te_t, te_e = time[train], event[train], time[test], event[test]
        problem = None
        if not tr_e.any():
            problem = f"fold {k}: the training split has no events"
        elif not te_e.any():
            problem = f"fold {k}: the test split has no events"
        times = None
        if problem is None:
            times, _ = _time_grid(tr_t, te_t, te_e, cfg)
        y_eval = _follow_up_adjusted(Surv.from_arrays(te_e, te_t), tr_t)
        setups.append(
            FoldSetup(
                fold=int(k),
                repeat=repeat,
                test=test,
                time=te_t,
                event=te_e,
                time_eval=np.ascontiguousarray(y_eval["time"], dtype=np.float64),
                event_eval=np.ascontiguousarray(y_eval["event"], dtype=bool),
                times=times,
                tau=float(min(tr_t.max(), te_t.max())),
                cens=None if problem else KaplanMeier(tr_e, tr_t, reverse=True, device="cpu"),
                problem=problem,
            )
        )
    return OutOfFold(
        ids,
        time,
        event,
        setups,
        list(cfg.metrics.horizons),
        float(cfg.metrics.tied_tol),
    )


def bootstrap_weights(event: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[1 + n_boot, n]`` patient multiplicities: row 0 all ones (the data), then replicates.

    Each replicate draws as many events as there are, with replacement, from the events,
    and as many censored patients from the censored ones (stratified by event).
    """
    event = np.asarray(event).astype(bool)
    rng = np.random.default_rng(seed)
    w = np.ones((n_boot + 1, event.size))
    for stratum in (event, ~event):
        idx = np.flatnonzero(stratum)
        if idx.size:
            w[1:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return w
