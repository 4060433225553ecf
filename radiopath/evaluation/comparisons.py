"""Intervals of one arm and paired comparisons of two: percentiles, p-values, Holm.

:func:`intervals` gives each study's fold-mean estimate and its percentile interval;
:func:`compare_arms` the paired difference of two arms on the same replicates, its interval,
the bootstrap and Wilcoxon p-values and their Holm adjustment; :func:`paired_bootstrap` the
same for two risk scores of one test set. Part of :mod:`radiopath.evaluation.stats`, which
re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.arms import ArmScores, _fold_mean, score_arm
from radiopath.evaluation.bootstrap import FoldSetup, OutOfFold, bootstrap_weights
from radiopath.evaluation.config import METRICS
from radiopath.evaluation.torch_metrics import KaplanMeier

__all__ = ["bootstrap_p", "compare_arms", "holm", "intervals", "paired_bootstrap"]

INTERVAL_COLUMNS = [
    "aggregator",
    "modalities",
    "model",
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "level",
    "n_folds",
    "n_boot",
]
COMPARISON_COLUMNS = [
    "aggregator_a",
    "aggregator_b",
    "modalities",
    "model",
    "metric",
    "delta",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "p_wilcoxon",
    "p_wilcoxon_holm",
    "n_folds",
    "family",
]


def _percentiles(reps: np.ndarray, alpha: float) -> tuple[float, float, int]:
    ok = reps[np.isfinite(reps)]
    if ok.size == 0:
        return float("nan"), float("nan"), 0
    lo, hi = np.percentile(ok, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi), int(ok.size)


def bootstrap_p(deltas: np.ndarray) -> float:
    """Two-sided bootstrap p-value of ``delta = 0`` from replicate differences.

    ``min(1, 2 min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))`` over the finite replicates:
    the smallest two-sided level whose percentile interval still contains 0. Identical
    arms (every ``d* = 0``) give 1.
    """
    d = np.asarray(deltas, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    below = (d <= 0).sum() + 1
    above = (d >= 0).sum() + 1
    return float(min(1.0, 2.0 * min(below, above) / (d.size + 1)))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (NaN entries are left out and stay NaN)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    m = order.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def _wilcoxon_p(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """Wilcoxon signed-rank p of the paired per-fold differences (1 when all are zero)."""
    both = np.isfinite(a) & np.isfinite(b)
    d = a[both] - b[both]
    if d.size == 0:
        return float("nan"), 0
    if not np.any(d != 0):
        return 1.0, int(d.size)
    return float(wilcoxon(d).pvalue), int(d.size)


def intervals(arm: ArmScores, alpha: float = 0.05) -> pd.DataFrame:
    """``intervals.csv`` rows of one arm: fold-mean estimate and percentile interval."""
    rows = []
    for (model, metric), (stat, per_fold) in arm.studies().items():
        lo, hi, n_boot = _percentiles(stat[1:], alpha)
        rows.append(
            {
                "aggregator": arm.aggregator,
                "modalities": arm.modalities,
                "model": model,
                "metric": metric,
                "estimate": float(stat[0]),
                "ci_low": lo,
                "ci_high": hi,
                "level": 1 - alpha,
                "n_folds": int(np.isfinite(per_fold).sum()),
                "n_boot": n_boot,
            }
        )
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)


def compare_arms(a: ArmScores, b: ArmScores, alpha: float = 0.05) -> pd.DataFrame:
    """Paired comparison ``a - b`` of two arms scored on the same folds and replicates.

    One row per study both arms have: the difference of the fold-mean statistics, its
    percentile interval and bootstrap p-value over the shared replicates, the Wilcoxon
    signed-rank p over the shared folds, and both Holm-adjusted within the family (the 19
    studies, ``"studies"``; the fixed-horizon metrics, ``"horizons"``).
    """
    if a.fold_ids != b.fold_ids:
        raise RadiopathInputError(
            f"{a.aggregator} and {b.aggregator} were not scored on the same folds", field="folds"
        )
    sa, sb = a.studies(), b.studies()
    rows = []
    for key in sa:
        if key not in sb:
            continue
        model, metric = key
        (stat_a, fold_a), (stat_b, fold_b) = sa[key], sb[key]
        if stat_a.shape != stat_b.shape:
            raise RadiopathInputError(
                f"{a.aggregator} and {b.aggregator} have different bootstrap replicates",
                field="bootstrap",
            )
        delta = stat_a - stat_b
        lo, hi, _ = _percentiles(delta[1:], alpha)
        pw, n = _wilcoxon_p(fold_a, fold_b)
        rows.append(
            {
                "aggregator_a": a.aggregator,
                "aggregator_b": b.aggregator,
                "modalities": a.modalities,
                "model": model,
                "metric": metric,
                "delta": float(delta[0]),
                "ci_low": lo,
                "ci_high": hi,
                "p": bootstrap_p(delta[1:]),
                "p_wilcoxon": pw,
                "n_folds": n,
                "family": "studies" if metric in METRICS else "horizons",
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    for idx in out.groupby("family").groups.values():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"])
        out.loc[idx, "p_wilcoxon_holm"] = holm(out.loc[idx, "p_wilcoxon"])
    return out[COMPARISON_COLUMNS]


def paired_bootstrap(
    time,
    event,
    risk_a,
    risk_b,
    *,
    metric: str = "c_index",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Paired bootstrap of ``metric(a) - metric(b)`` for two risk scores of the same patients.

    One test set, its own censoring distribution for C-IPCW (``metric`` is ``c_index`` or
    ``c_ipcw``). Returns ``delta, ci_low, ci_high, p`` and the two estimates.
    """
    if metric not in ("c_index", "c_ipcw"):
        raise RadiopathInputError(f"must be 'c_index' or 'c_ipcw', got {metric!r}", field="metric")
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    ids = np.array([f"p{i}" for i in range(time.size)])
    fs = FoldSetup(
        fold=0,
        repeat=0,
        test=np.arange(time.size),
        time=time,
        event=event,
        time_eval=time,
        event_eval=event,
        times=None,
        tau=float(time.max()),
        cens=KaplanMeier(event, time, reverse=True, device="cpu"),
    )
    oof = OutOfFold(ids, time, event, [fs], [], 1e-8)
    w = bootstrap_weights(event, n_boot, seed)
    arms = []
    for name, risk in (("a", risk_a), ("b", risk_b)):
        frame = pd.DataFrame(
            {"model": "coxph", "fold": 0, "patient_id": ids, "risk": np.asarray(risk, float)}
        )
        arms.append(score_arm(oof, w, frame, aggregator=name, modalities="-"))
    va = _fold_mean(arms[0].values[("coxph", metric)])
    vb = _fold_mean(arms[1].values[("coxph", metric)])
    delta = va - vb
    lo, hi, _ = _percentiles(delta[1:], alpha)
    return {
        "estimate_a": float(va[0]),
        "estimate_b": float(vb[0]),
        "delta": float(delta[0]),
        "ci_low": lo,
        "ci_high": hi,
        "p": bootstrap_p(delta[1:]),
    }
