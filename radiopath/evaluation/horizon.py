"""A fixed-horizon binary endpoint: "event by time t?" scored as a classification.

A patient's label at horizon ``t`` is 1 when the event happened at or before ``t``, 0
when the patient was followed beyond ``t`` event-free; a patient censored at or before
``t`` has no label and is left out (counted in ``n_excluded``). The scores are then
judged by scikit-learn's classification metrics: accuracy, balanced accuracy, F1 (of
the threshold's predictions), ROC-AUC and PR-AUC (average precision, of the scores).

**Threshold rule** (:func:`horizon_threshold`), per outer fold, from that fold's own
model and training patients only:

* ``kind="binary"`` -- the score is the logit of a binary horizon head: 0.5 on the
  sigmoid, i.e. logit 0;
* ``kind="cox"`` -- a Cox-type risk (higher = earlier event) has no probability scale:
  the threshold is the training fold's risk quantile that makes the share of training
  patients predicted positive equal to the training fold's event rate at the horizon,
  estimated by Kaplan-Meier (``1 - S(t)``, so censored training patients count as far as
  they were followed). The training risks are each fold's ``embeddings/fold_<k>.npz``
  (:func:`radiopath.io.read_fold_embeddings`, field ``risk`` of the ``train`` split).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sksurv.nonparametric import kaplan_meier_estimator

from radiopath.errors import RadiopathInputError

__all__ = [
    "TIME_UNITS",
    "binary_horizon_metrics",
    "check_horizon",
    "horizon_labels",
    "horizon_threshold",
    "parse_horizon",
    "run_horizon_metrics",
]

DAYS_PER_YEAR = 365.25
TIME_UNITS: dict[str, float] = {"days": 1.0, "months": DAYS_PER_YEAR / 12, "years": DAYS_PER_YEAR}
"""Length of each time unit in days (a year of 365.25 days, a month a twelfth of it)."""

_SUFFIXES = {
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "wk": "weeks",
    "week": "weeks",
    "weeks": "weeks",
    "m": "months",
    "mo": "months",
    "month": "months",
    "months": "months",
    "y": "years",
    "yr": "years",
    "year": "years",
    "years": "years",
}
_HORIZON = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*")


def parse_horizon(value, time_unit: str = "days") -> float:
    """A horizon in the cohort's time unit.

    Parameters
    ----------
    value
        A number (already in ``time_unit``), or text: ``"1826"``, ``"5y"``, ``"5 years"``,
        ``"60m"`` / ``"60 months"`` (``m`` is months), ``"26w"``, ``"100d"``.
    time_unit
        The unit of the cohort's ``time`` column: ``days``, ``months`` or ``years``.

    Examples
    --------
    >>> parse_horizon("5y")
    1826.25
    >>> parse_horizon("18m", time_unit="months")
    18.0
    """
    if time_unit not in TIME_UNITS:
        raise RadiopathInputError(
            f"unknown time unit {time_unit!r}; choose from {list(TIME_UNITS)}", field="time_unit"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), None
    else:
        match = _HORIZON.fullmatch(str(value).lower()) if isinstance(value, str) else None
        if match is None or match.group(2) not in ("", *_SUFFIXES):
            raise RadiopathInputError(
                f"cannot read {value!r} as a horizon: give a number in the cohort's time unit "
                f"or e.g. '5y', '60m', '26w', '100d'",
                field="horizon",
            )
        number, unit = float(match.group(1)), _SUFFIXES.get(match.group(2))
    if not math.isfinite(number) or number <= 0:
        raise RadiopathInputError(
            f"a horizon must be a positive time, got {value!r}", field="horizon"
        )
    if unit is None:
        return number
    days = number * (7.0 if unit == "weeks" else TIME_UNITS[unit])
    return days / TIME_UNITS[time_unit]


def horizon_labels(time, event, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels at ``horizon`` and which patients have one.

    Returns
    -------
    label : numpy.ndarray
        ``[n]`` int: 1 for an event at or before ``horizon``, 0 otherwise (meaningful only
        where ``usable``).
    usable : numpy.ndarray
        ``[n]`` bool: an event by ``horizon``, or follow-up beyond it; False for a patient
        censored at or before ``horizon``.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    label = (event & (time <= horizon)).astype(int)
    usable = label.astype(bool) | (time > horizon)
    return label, usable


def check_horizon(time, event, horizon: float) -> None:
    """Refuse a horizon the cohort cannot score: no patient followed beyond it, or no
    event before it (``RadiopathInputError``, field ``horizon``)."""
    label, usable = horizon_labels(time, event, horizon)
    positives = int(label[usable].sum())
    negatives = int(usable.sum()) - positives
    time = np.asarray(time, dtype=np.float64)
    if negatives == 0:
        raise RadiopathInputError(
            f"no patient is followed beyond the horizon {horizon:g} (longest follow-up "
            f"{time.max():g}): the horizon is beyond the cohort's follow-up",
            field="horizon",
        )
    if positives == 0:
        raise RadiopathInputError(
            f"no event at or before the horizon {horizon:g} (first event at "
            f"{time[np.asarray(event).astype(bool)].min():g}): nothing to predict",
            field="horizon",
        )


def horizon_threshold(
    train_score, train_time=None, train_event=None, horizon: float | None = None, *, kind="cox"
) -> float:
    """The threshold of one fold (module docstring): 0 on the logit for ``kind="binary"``;
    for ``kind="cox"`` the training risk above which the share of training patients equals
    the Kaplan-Meier event probability ``1 - S(horizon)`` of the training fold.

    A score is predicted positive when it is ``> threshold``. With tied training risks the
    predicted-positive share can differ from the event rate by the size of the tie.
    """
    if kind == "binary":
        return 0.0
    if kind != "cox":
        raise RadiopathInputError(f"kind must be 'cox' or 'binary', got {kind!r}", field="kind")
    score = np.sort(np.asarray(train_score, dtype=np.float64))
    times, survival = kaplan_meier_estimator(
        np.asarray(train_event).astype(bool), np.asarray(train_time, dtype=np.float64)
    )
    before = times <= horizon
    rate = 1.0 - (survival[before][-1] if before.any() else 1.0)
    positives = int(round(rate * score.size))
    if positives >= score.size:
        return -math.inf
    return float(score[score.size - positives - 1])


def binary_horizon_metrics(time, event, score, horizon: float, threshold: float) -> dict:
    """Classification metrics of ``score`` for the event by ``horizon`` (sklearn.metrics).

    Parameters
    ----------
    time, event
        ``[n]`` follow-up and event indicator.
    score
        ``[n]`` higher = event more likely (a risk or a logit).
    horizon
        In the unit of ``time``.
    threshold
        Predicted positive when ``score > threshold`` (:func:`horizon_threshold`).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``f1``, ``roc_auc``, ``pr_auc`` (average
        precision), ``n_used``, ``n_excluded`` (censored at or before the horizon),
        ``n_positive``, ``predicted_positive``; an AUC is NaN when the used patients are
        all of one class.
    """
    label, usable = horizon_labels(time, event, horizon)
    score = np.asarray(score, dtype=np.float64)
    y, s = label[usable], score[usable]
    predicted = (s > threshold).astype(int)
    two_classes = np.unique(y).size == 2
    return {
        "n_used": int(usable.sum()),
        "n_excluded": int((~usable).sum()),
        "n_positive": int(y.sum()),
        "predicted_positive": int(predicted.sum()),
        "accuracy": float(skm.accuracy_score(y, predicted)) if y.size else math.nan,
        "balanced_accuracy": float(skm.balanced_accuracy_score(y, predicted))
        if two_classes
        else math.nan,
        "f1": float(skm.f1_score(y, predicted, zero_division=0.0)) if y.size else math.nan,
        "roc_auc": float(skm.roc_auc_score(y, s)) if two_classes else math.nan,
        "pr_auc": float(skm.average_precision_score(y, s)) if two_classes else math.nan,
    }


HORIZON_COLUMNS = [
    "aggregator",
    "repeat",
    "fold",
    "horizon",
    "threshold_rule",
    "threshold",
    "n_used",
    "n_excluded",
    "n_positive",
    "predicted_positive",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "roc_auc",
    "pr_auc",
]


def run_horizon_metrics(
    run_dir: str | Path, horizon: float, *, aggregator: str | None = None, kind: str = "cox"
) -> pd.DataFrame:
    """Fixed-horizon metrics of a training run's own out-of-fold risks.

    Each fold's test risks (``risks.csv``) are thresholded by the rule of ``kind`` applied
    to that fold's training risks (``embeddings/fold_<k>.npz``); a row per fold and, per
    repeat, a ``fold = "all"`` row of the folds' test patients pooled: each patient's risk
    minus its own fold's threshold, so the pooled predictions are the folds' own and the
    pooled AUCs rank risks on a scale shared across folds.

    Returns
    -------
    pandas.DataFrame
        :data:`HORIZON_COLUMNS`.

    Raises
    ------
    RadiopathInputError
        A run without its own risks (``risks.csv`` absent or a fold file without ``risk``),
        naming the file.
    """
    from radiopath.io import read_fold_embeddings

    run_dir = Path(run_dir)
    risks_path = run_dir / "risks.csv"
    if not risks_path.exists():
        raise RadiopathInputError("the run has no risks of its own", path=risks_path)
    risks = pd.read_csv(risks_path, dtype={"patient_id": str})
    name = aggregator or str(risks["aggregator"].iloc[0])
    rows, pooled = [], []
    for fold, test in risks.groupby("fold", sort=True):
        path = run_dir / "embeddings" / f"fold_{int(fold)}.npz"
        train = read_fold_embeddings(path).part("train")
        if train.risk is None:
            raise RadiopathInputError("fold file has no risk", path=path, field="risk")
        threshold = horizon_threshold(train.risk, train.time, train.event, horizon, kind=kind)
        pooled.append(test.assign(threshold=threshold))
        rows.append(
            {
                "repeat": int(test["repeat"].iloc[0]) if "repeat" in test else 0,
                "fold": str(int(fold)),
                "threshold": threshold,
                **binary_horizon_metrics(
                    test["time"], test["event"], test["risk"], horizon, threshold
                ),
            }
        )
    every = pd.concat(pooled, ignore_index=True)
    if "repeat" not in every:
        every["repeat"] = 0
    for repeat, part in every.groupby("repeat", sort=True):
        # each patient against its own fold's threshold: shift the risks by it, threshold 0
        shifted = part["risk"] - part["threshold"]
        rows.append(
            {
                "repeat": int(repeat),
                "fold": "all",
                "threshold": math.nan,
                **binary_horizon_metrics(part["time"], part["event"], shifted, horizon, 0.0),
            }
        )
    table = pd.DataFrame(rows).assign(
        aggregator=name,
        horizon=horizon,
        threshold_rule="sigmoid 0.5" if kind == "binary" else "training event rate",
    )
    return table[HORIZON_COLUMNS]
