"""Intervals and paired tests: does one aggregator really beat another?

A comparison's table says mean (sd) over outer folds; on a cohort of a few hundred patients a
difference of a few hundredths of C-index is often noise. This module adds, for each study
(model x metric, and the average over models):

* **an interval**: a patient-level bootstrap of the out-of-fold predictions. One replicate
  draws the cohort's patients with replacement, stratified by event (as many events and as
  many censored patients as the cohort has); every outer fold's metric is recomputed on its
  resampled test patients -- with that fold's own training censoring distribution, C-IPCW
  horizon and time grid, exactly as :mod:`radiopath.evaluation.protocol` scored the fold --
  and the replicate's value is the mean over all folds (over the R x K folds of repeated
  cross-validation: a patient drawn k times counts k times in every repeat). The statistic
  is therefore the number of the table (the mean over folds), and the interval is the
  percentile interval of its replicates. The downstream models, the censoring distributions
  and the time grids are held fixed: the interval is about the test patients, not about
  refitting (repeats add the variation of the splits to the point estimate).
* **a paired comparison** of every two aggregators (or sweep points) that share folds: the
  difference of their statistics on the *same* replicates, its percentile interval and the
  two-sided bootstrap p-value ``min(1, 2 min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))``,
  and a Wilcoxon signed-rank test of the per-fold differences (``scipy.stats.wilcoxon``,
  folds x repeats; folds of different repeats share patients, so this one is optimistic).
  Each is Holm-corrected over the 19 studies of the pair (the fixed-horizon metrics are a
  family of their own).

The bootstrap is vectorised: a resample is a vector of patient multiplicities ``w``, and
every metric is a linear or quadratic form in ``w`` -- Harrell's and Uno's C are
``w^T A w / w^T D w`` over the comparable pairs, the cumulative/dynamic AUC is the same at
each time with the Kaplan-Meier weights of the resampled test data, the Brier score is
``w^T m / w^T 1`` -- so all B replicates of a fold are a few ``[B, n] @ [n, n]`` products.
Scoring a patient k times this way equals scoring the data set with k copies of the patient
(scikit-survival's functions on the duplicated data; the tests check it).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import wilcoxon
from sksurv.util import Surv

from radiopath.errors import RadiopathInputError
from radiopath.evaluation._cox import DTYPE, torch_threads
from radiopath.evaluation.config import (
    METRICS,
    MODELS,
    SURVIVAL_FUNCTION_MODELS,
    ordered_aggregators,
    resolve_evaluation_config,
)
from radiopath.evaluation.prepare import _follow_up_adjusted, _time_grid
from radiopath.evaluation.torch_metrics import KaplanMeier, comparable_pairs

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STATISTICS",
    "Analysis",
    "ArmScores",
    "OutOfFold",
    "analyse_run",
    "analyse_runs",
    "bootstrap_p",
    "bootstrap_weights",
    "compare_arms",
    "holm",
    "intervals",
    "out_of_fold",
    "paired_bootstrap",
    "resolve_statistics_config",
    "score_arm",
]

DEFAULT_STATISTICS: dict = {"bootstrap": 1000, "alpha": 0.05, "seed": 0}
"""``statistics`` section of a benchmark: bootstrap replicates, the level of the intervals
and tests (1 - alpha intervals, significance at alpha after Holm) and the resampling seed."""

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


# ----------------------------------------------------------------------------- configuration


def resolve_statistics_config(config: Mapping | None = None) -> dict:
    """Defaults <- ``config``; each key is checked and a bad one is named."""
    cfg = dict(DEFAULT_STATISTICS)
    if config is None:
        return cfg
    if not isinstance(config, Mapping):
        raise RadiopathInputError(
            f"must be a mapping of {sorted(DEFAULT_STATISTICS)}, got {config!r}", field="statistics"
        )
    unknown = sorted(set(config) - set(DEFAULT_STATISTICS))
    if unknown:
        raise RadiopathInputError(
            f"unknown key; known: {sorted(DEFAULT_STATISTICS)}", field=f"statistics.{unknown[0]}"
        )
    cfg.update({k: v for k, v in config.items() if v is not None})
    b = cfg["bootstrap"]
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
        raise RadiopathInputError(
            f"must be a positive integer (replicates), got {b!r}", field="statistics.bootstrap"
        )
    a = cfg["alpha"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < float(a) < 1.0:
        raise RadiopathInputError(f"must be in (0, 1), got {a!r}", field="statistics.alpha")
    s = cfg["seed"]
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
        raise RadiopathInputError(
            f"must be a non-negative integer, got {s!r}", field="statistics.seed"
        )
    return {"bootstrap": int(b), "alpha": float(a), "seed": int(s)}


def horizon_metrics(horizons: Sequence[float]) -> list[str]:
    """Metric names of the fixed horizons: ``auc@<h>`` and ``brier@<h>``."""
    return [f"{kind}@{h:g}" for h in horizons for kind in ("auc", "brier")]


def _has_metric(model: str, metric: str) -> bool:
    needs_survival = metric == "ibs" or metric.startswith("brier@")
    return model in SURVIVAL_FUNCTION_MODELS or not needs_survival


# ----------------------------------------------------------------------------- folds


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
    folds: pd.DataFrame, outcomes: pd.DataFrame, config: Mapping | None = None
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
        list(cfg["metrics"]["horizons"]),
        float(cfg["metrics"]["tied_tol"]),
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


# ----------------------------------------------------------------------------- weighted metrics


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64), dtype=DTYPE)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, torch.nan))


def _pair_scores(risk: torch.Tensor, tied_tol: float) -> torch.Tensor:
    """``[i, j]``: 1 if risk_i > risk_j, 1/2 if tied (within ``tied_tol``), else 0."""
    diff = risk.unsqueeze(1) - risk.unsqueeze(0)
    tie = diff.abs() <= tied_tol
    return torch.where(tie, torch.full_like(diff, 0.5), (diff > 0).to(DTYPE))


def _concordance(w, score, comp, a) -> torch.Tensor:
    """Σ_ij w_i w_j a_i comp_ij score_ij / Σ_ij w_i w_j a_i comp_ij for each row of ``w``."""
    pairs = comp.to(DTYPE) * a.unsqueeze(1)
    num = ((w @ (pairs * score)) * w).sum(1)
    den = ((w @ pairs) * w).sum(1)
    return _ratio(num, den)


def _weighted_km(w, time, event, at) -> torch.Tensor:
    """Kaplan-Meier survival of the weighted test data at the times ``at``: ``[B, len(at)]``."""
    u = torch.unique(time[event])
    d = w @ ((time.unsqueeze(1) == u.unsqueeze(0)) & event.unsqueeze(1)).to(DTYPE)
    r = w @ (time.unsqueeze(1) >= u.unsqueeze(0)).to(DTYPE)
    hazard = torch.where(d > 0, d / r.clamp_min(1e-300), torch.zeros_like(d))
    surv = torch.cat([torch.ones_like(hazard[:, :1]), torch.cumprod(1.0 - hazard, 1)], 1)
    idx = torch.searchsorted(u, at, right=True)
    return surv[:, idx]


def _cumulative_auc(w, score, time, event, ipcw, at) -> torch.Tensor:
    """Cumulative/dynamic AUC at ``at`` and its Kaplan-Meier-weighted mean: ``[B]``."""
    case = ((time.unsqueeze(1) <= at.unsqueeze(0)) & event.unsqueeze(1)).to(DTYPE)
    control = (time.unsqueeze(1) > at.unsqueeze(0)).to(DTYPE)
    x = w.unsqueeze(2) * (case * ipcw.unsqueeze(1)).unsqueeze(0)  # [B, n, T]
    y = w.unsqueeze(2) * control.unsqueeze(0)
    num = (x * torch.einsum("ij,bjt->bit", score, y)).sum(1)
    auc = _ratio(num, x.sum(1) * y.sum(1))  # [B, T]
    if at.numel() == 1:
        return auc[:, 0]
    s = _weighted_km(w, time, event, at)
    drop = torch.cat([torch.ones_like(s[:, :1]), s[:, :-1]], 1) - s
    terms = torch.where(drop == 0, torch.zeros_like(auc), auc * drop)
    return _ratio(terms.sum(1), 1.0 - s[:, -1])


def _brier(w, surv, time, event, g_time, g_at, at) -> torch.Tensor:
    """IPCW Brier score at each of ``at``: ``[B, T]``."""
    case = ((time.unsqueeze(1) <= at.unsqueeze(0)) & event.unsqueeze(1)).to(DTYPE)
    control = (time.unsqueeze(1) > at.unsqueeze(0)).to(DTYPE)
    inf = torch.full_like(g_time, torch.inf)
    g_time = torch.where(g_time == 0, inf, g_time)
    g_at = torch.where(g_at == 0, torch.full_like(g_at, torch.inf), g_at)
    m = surv**2 * case / g_time.unsqueeze(1) + (1.0 - surv) ** 2 * control / g_at.unsqueeze(0)
    return (w @ m) / w.sum(1, keepdim=True)


def _fold_tensors(fs: FoldSetup) -> dict:
    """Per-fold tensors shared by every model and replicate."""
    if fs._cache:
        return fs._cache
    c = fs._cache
    c["time"], c["event"] = _t(fs.time), torch.as_tensor(fs.event)
    c["time_eval"], c["event_eval"] = _t(fs.time_eval), torch.as_tensor(fs.event_eval)
    c["comp"], _ = comparable_pairs(c["event"], c["time"])
    ones = torch.ones(len(fs.time), dtype=DTYPE)
    c["a_harrell"] = ones
    # Uno's C: events before tau weighted by 1 / G(t_i)^2
    used = c["event"] & (c["time"] < fs.tau)
    g = torch.ones_like(ones)
    g[used] = fs.cens.predict_proba(fs.time[used.numpy()])
    inv = torch.where(g > 0, 1.0 / g.clamp_min(1e-300), torch.full_like(g, torch.inf))
    ipcw = torch.where(used, inv, torch.zeros_like(g))
    c["a_uno"] = ipcw**2
    c["uno_ok"] = bool(torch.isfinite(c["a_uno"]).all())
    # C-AUC / Brier: 1 / G at the follow-up-adjusted test times
    g_eval = fs.cens.predict_proba(fs.time_eval)
    c["g_eval"] = g_eval
    inv = torch.where(
        g_eval > 0, 1.0 / g_eval.clamp_min(1e-300), torch.full_like(g_eval, torch.inf)
    )
    c["ipcw_eval"] = torch.where(c["event_eval"], inv, torch.zeros_like(g_eval))
    c["auc_ok"] = bool(torch.isfinite(c["ipcw_eval"]).all())
    return c


def _horizon_ok(fs: FoldSetup, h: float) -> bool:
    """The protocol's rule for a time of C-AUC / Brier: inside the adjusted test follow-up."""
    return fs.problem is None and fs.time_eval.min() <= h < fs.time_eval.max()


def _score_fold(
    fs: FoldSetup,
    w: torch.Tensor,
    risk: np.ndarray,
    survival: Mapping[float, np.ndarray] | None,
    model: str,
    horizons: Sequence[float],
    tied_tol: float,
) -> dict[str, torch.Tensor]:
    """Every metric of one model on one fold for each row of ``w`` (``[B, n]``)."""
    nan = torch.full((w.shape[0],), torch.nan, dtype=DTYPE)
    out = {m: nan for m in METRICS if _has_metric(model, m)}
    out.update({m: nan for m in horizon_metrics(horizons) if _has_metric(model, m)})
    if fs.problem is not None or risk is None:
        return out
    c = _fold_tensors(fs)
    r = _t(risk)
    score = _pair_scores(r, tied_tol)
    out["c_index"] = _concordance(w, score, c["comp"], c["a_harrell"])
    if c["uno_ok"]:
        out["c_ipcw"] = _concordance(w, score, c["comp"], c["a_uno"])
    if fs.times is not None and c["auc_ok"]:
        out["c_auc"] = _cumulative_auc(
            w, score, c["time_eval"], c["event_eval"], c["ipcw_eval"], _t(fs.times)
        )
    survival = survival or {}
    if "ibs" in out and fs.times is not None and len(fs.times) >= 2:
        columns = [survival.get(float(t)) for t in fs.times]
        if all(col is not None for col in columns):
            at = _t(fs.times)
            bs = _brier(
                w,
                _t(np.column_stack(columns)),
                c["time_eval"],
                c["event_eval"],
                c["g_eval"],
                fs.cens.predict_proba(at),
                at,
            )
            out["ibs"] = torch.trapezoid(bs, at, dim=1) / (at[-1] - at[0])
    for h in horizons:
        if not _horizon_ok(fs, h):
            continue
        at = _t([h])
        if c["auc_ok"]:
            out[f"auc@{h:g}"] = _cumulative_auc(
                w, score, c["time_eval"], c["event_eval"], c["ipcw_eval"], at
            )
        col = survival.get(float(h))
        if f"brier@{h:g}" in out and col is not None:
            out[f"brier@{h:g}"] = _brier(
                w,
                _t(col).unsqueeze(1),
                c["time_eval"],
                c["event_eval"],
                c["g_eval"],
                fs.cens.predict_proba(at),
                at,
            )[:, 0]
    return out


# ----------------------------------------------------------------------------- arms


@dataclass
class ArmScores:
    """Every metric of one arm (an aggregator of one run) on every fold and replicate.

    ``values[(model, metric)]`` is ``[1 + B, F]``: row 0 the folds' own values (they equal
    ``metrics.csv``), then one row per bootstrap replicate; columns follow ``fold_ids``.
    """

    aggregator: str
    modalities: str
    fold_ids: list[int]
    values: dict[tuple[str, str], np.ndarray]

    def studies(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """Per study: the statistic ``[1 + B]`` and the folds' own values ``[F]``.

        The statistic of a model is the mean over its folds (row 0: the table's mean). The
        average over models (``("avg", metric)``, over the models with a value on some
        fold) is the mean of the models' statistics, and its per-fold values -- for the
        Wilcoxon test -- the mean over models in each fold.
        """
        out = {key: (_fold_mean(v), v[0]) for key, v in self.values.items()}
        by_metric: dict[str, list[np.ndarray]] = {}
        for (_, metric), v in self.values.items():
            if np.isfinite(v[0]).any():
                by_metric.setdefault(metric, []).append(v)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for metric, vs in by_metric.items():
                stat = np.nanmean(np.stack([_fold_mean(v) for v in vs]), axis=0)
                per_fold = np.nanmean(np.stack([v[0] for v in vs]), axis=0)
                out[("avg", metric)] = (stat, per_fold)
        return out


def _survival_columns(table, test_ids, fs: FoldSetup, horizons) -> dict[float, np.ndarray]:
    """Survival of the fold's test patients at its grid and the horizons, keyed by time."""
    if table is None or not set(test_ids) <= set(table.index):
        return {}
    table = table.loc[test_ids]
    have = np.asarray(table.columns, dtype=np.float64)
    wanted = list(fs.times) if fs.times is not None else []
    out = {}
    for t in [*wanted, *horizons]:
        hit = np.flatnonzero(np.isclose(have, t, rtol=1e-12, atol=0))
        if hit.size and table.iloc[:, hit[0]].notna().all():
            out[float(t)] = table.iloc[:, hit[0]].to_numpy(dtype=np.float64)
    return out


def score_arm(
    oof: OutOfFold,
    weights: np.ndarray,
    predictions: pd.DataFrame,
    survival: pd.DataFrame | None = None,
    *,
    aggregator: str | None = None,
    modalities: str | None = None,
) -> ArmScores:
    """Score one arm's out-of-fold predictions on the data and on every replicate.

    Parameters
    ----------
    oof
        :func:`out_of_fold` of the folds the predictions were made on.
    weights
        :func:`bootstrap_weights` of ``oof.event`` -- the same array for every arm that is
        to be compared.
    predictions
        The arm's rows of ``predictions.csv`` (``model, fold, patient_id, risk``).
    survival
        Its rows of ``survival.csv`` (``model, fold, patient_id, t, survival``), needed for
        IBS and the Brier score at a horizon.
    """
    aggregator = aggregator or str(predictions["aggregator"].iloc[0])
    modalities = modalities or str(predictions["modalities"].iloc[0])
    w_all = torch.as_tensor(weights, dtype=DTYPE)
    models = [m for m in MODELS if m in set(predictions["model"])]
    models += sorted(set(predictions["model"]) - set(models))
    preds = predictions.assign(patient_id=predictions["patient_id"].astype(str))
    risk_of = {
        (m, int(f)): dict(zip(part["patient_id"], part["risk"].to_numpy(dtype=np.float64)))
        for (m, f), part in preds.groupby(["model", "fold"])
    }
    surv_of: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    if survival is not None and not survival.empty:
        sv = survival.assign(patient_id=survival["patient_id"].astype(str))
        for (m, f), part in sv.groupby(["model", "fold"]):
            table = part.pivot(index="patient_id", columns="t", values="survival")
            surv_of[(m, int(f))] = table
    values: dict[tuple[str, str], np.ndarray] = {}
    with torch_threads(1):  # small kernels: extra threads only spin (see torch_threads)
        for j, fs in enumerate(oof.folds):
            _score_models(j, fs, oof, w_all, models, risk_of, surv_of, aggregator, values)
    return ArmScores(aggregator, modalities, oof.fold_ids, values)


def _fold_risk(risks: dict | None, test_ids: np.ndarray, where: str) -> np.ndarray | None:
    """One model's risks of a fold's test patients, in fold order (None: the fit failed)."""
    if risks is None:
        return None
    have = [p in risks for p in test_ids]
    if not all(have):
        raise RadiopathInputError(
            f"{where}: predictions for {sum(have)} of the {len(test_ids)} test patients of the "
            f"folds (first missing: {test_ids[have.index(False)]!r})",
            field="predictions",
        )
    unknown = set(risks) - set(test_ids)
    if unknown:
        raise RadiopathInputError(
            f"{where}: patient(s) {sorted(unknown)[:3]} predicted but not in this fold's test "
            "split of folds.csv",
            field="predictions",
        )
    return np.array([risks[p] for p in test_ids])


def _score_models(j, fs, oof, w_all, models, risk_of, surv_of, aggregator, values) -> None:
    """Fill column ``j`` (fold ``fs``) of every model's ``[1 + B, F]`` array in ``values``."""
    w = w_all[:, fs.test]
    test_ids = oof.patient_id[fs.test]
    for m in models:
        risk = _fold_risk(
            risk_of.get((m, fs.fold)), test_ids, f"{aggregator} / {m} / fold {fs.fold}"
        )
        surv = _survival_columns(surv_of.get((m, fs.fold)), test_ids, fs, oof.horizons)
        scores = _score_fold(fs, w, risk, surv, m, oof.horizons, oof.tied_tol)
        for metric, v in scores.items():
            shape = (w_all.shape[0], len(oof.folds))
            values.setdefault((m, metric), np.full(shape, np.nan))[:, j] = v.numpy()


# ----------------------------------------------------------------------------- summaries


def _fold_mean(v: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(v, axis=1)


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


# ----------------------------------------------------------------------------- run directories


@dataclass
class Analysis:
    """What :func:`analyse_run` found: ``intervals.csv`` and ``comparisons.csv`` tables."""

    intervals: pd.DataFrame
    comparisons: pd.DataFrame
    arms: list[ArmScores]
    config: dict
    n_patients: int
    n_folds: int
    n_repeats: int


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_id": str, "modalities": str}, **kw)


def _evaluation_settings(run_dir: Path, aggregator: str) -> dict:
    """The evaluation configuration an aggregator's metrics were computed with."""
    for path in (run_dir / "runs" / aggregator / "run.json", run_dir / "run.json"):
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        settings = (record.get("evaluation") or {}).get("settings") or {}
        if settings.get("config") is not None:
            return settings["config"]
        section = (record.get("config") or {}).get("evaluation")
        if isinstance(section, Mapping):
            return {k: v for k, v in section.items() if k != "backend"}
    return {}


def _run_tables(run_dir: Path):
    pred_path = run_dir / "predictions.csv"
    if not pred_path.exists():
        raise RadiopathInputError(
            "no predictions.csv: evaluate the run first (radiopath evaluate / benchmark)",
            path=pred_path,
        )
    preds = _read_csv(pred_path)
    surv_path = run_dir / "survival.csv"
    surv = _read_csv(surv_path) if surv_path.exists() else None
    if surv is None:
        log.warning("%s has no survival.csv: IBS and Brier intervals are left out", run_dir)
    folds_path = run_dir / "folds.csv"
    if folds_path.exists():
        from radiopath.training.folds import read_folds

        folds = read_folds(folds_path)
    else:
        log.warning("%s has no folds.csv: each fold's training set is taken as the rest", run_dir)
        folds = preds[["patient_id", "fold"]].drop_duplicates("patient_id").assign(repeat=0)
    return preds, surv, folds


def _score_runs(
    runs: Mapping[str, Path], cfg: dict
) -> tuple[dict[str, list[ArmScores]], OutOfFold]:
    """Score every arm of every run on one set of bootstrap replicates (shared folds)."""
    tables = {name: _run_tables(Path(d)) for name, d in runs.items()}
    folds = next(iter(tables.values()))[2]
    outcomes = pd.concat([t[0][["patient_id", "time", "event"]] for t in tables.values()])
    oofs: dict[str, OutOfFold] = {}
    weights = None
    scored: dict[str, list[ArmScores]] = {}
    for name, (preds, surv, _) in tables.items():
        arms = []
        for (agg, mods), part in preds.groupby(["aggregator", "modalities"], sort=False):
            settings = resolve_evaluation_config(_evaluation_settings(Path(runs[name]), agg))
            key = json.dumps(settings["metrics"], sort_keys=True, default=str)
            if key not in oofs:
                oofs[key] = out_of_fold(folds, outcomes, settings)
            oof = oofs[key]
            if weights is None:
                weights = bootstrap_weights(oof.event, cfg["bootstrap"], cfg["seed"])
            sv = None
            if surv is not None:
                sv = surv[(surv["aggregator"] == agg) & (surv["modalities"] == mods)]
            arms.append(score_arm(oof, weights, part, sv, aggregator=agg, modalities=mods))
        scored[name] = arms
    return scored, next(iter(oofs.values()))


def analyse_run(run_dir: str | os.PathLike, config: Mapping | None = None) -> Analysis:
    """Intervals of every aggregator and paired comparisons of every two, from the files.

    Reads ``predictions.csv``, ``survival.csv`` (IBS, Brier) and ``folds.csv`` of a
    benchmark (or evaluated training run) directory; ``config`` is the ``statistics``
    section (:data:`DEFAULT_STATISTICS`). Comparisons are ``later - earlier`` in
    :data:`radiopath.evaluation.config.AGGREGATOR_ORDER` within each modality set.
    """
    cfg = resolve_statistics_config(config)
    run_dir = Path(run_dir)
    scored, oof = _score_runs({"run": run_dir}, cfg)
    arms = scored["run"]
    alpha = cfg["alpha"]
    inter = pd.concat([intervals(a, alpha) for a in arms], ignore_index=True)
    comps = []
    for mods in dict.fromkeys(a.modalities for a in arms):
        group = {a.aggregator: a for a in arms if a.modalities == mods}
        order = ordered_aggregators(group)
        for i, b in enumerate(order):
            for a in order[i + 1 :]:
                comps.append(compare_arms(group[a], group[b], alpha))
    comparisons = (
        pd.concat(comps, ignore_index=True) if comps else pd.DataFrame(columns=COMPARISON_COLUMNS)
    )
    return Analysis(
        inter,
        comparisons,
        arms,
        cfg,
        n_patients=len(oof.patient_id),
        n_folds=len(oof.folds),
        n_repeats=len({f.repeat for f in oof.folds}),
    )


def analyse_runs(
    runs: Mapping[str, str | os.PathLike], config: Mapping | None = None
) -> pd.DataFrame:
    """Paired comparisons between runs (sweep points) with the same folds, per aggregator.

    ``runs`` maps a point's name to its run directory. Points are grouped by the content of
    their ``folds.csv``; within a group every two points are compared for each aggregator
    and modality set they share (``point_a - point_b``, later minus earlier in ``runs``),
    with the statistics of :func:`compare_arms`. Points with other folds are not compared.
    """
    cfg = resolve_statistics_config(config)
    groups: dict[str, dict[str, Path]] = {}
    for name, d in runs.items():
        path = Path(d) / "folds.csv"
        if not path.exists() or not (Path(d) / "predictions.csv").exists():
            log.warning("sweep point %s has no folds.csv / predictions.csv: not compared", name)
            continue
        groups.setdefault(path.read_text(), {})[name] = Path(d)
    frames = []
    for members in groups.values():
        if len(members) < 2:
            continue
        scored, _ = _score_runs(members, cfg)
        names = list(members)
        for i, nb in enumerate(names):
            for na in names[i + 1 :]:
                arms_b = {a.aggregator: a for a in scored[nb]}
                for arm_a in scored[na]:
                    arm_b = arms_b.get(arm_a.aggregator)
                    if arm_b is None:
                        continue
                    rows = compare_arms(arm_a, arm_b, cfg["alpha"])
                    rows = rows.drop(columns=["aggregator_b"]).rename(
                        columns={"aggregator_a": "aggregator", "modalities": "modalities_a"}
                    )
                    rows.insert(0, "point_b", nb)
                    rows.insert(0, "point_a", na)
                    rows.insert(4, "modalities_b", arm_b.modalities)
                    frames.append(rows)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
