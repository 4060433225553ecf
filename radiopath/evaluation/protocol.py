"""The downstream evaluation protocol of the paper, on per-fold patient embeddings.

For each outer fold (the aggregator is not refit; its fold embeddings are used as they are):

1. on the **training split only**: univariate Cox screening (p < 0.2, skipped for SPARRA),
   standardisation (``sklearn.preprocessing.StandardScaler``), and for each of RSF, CoxPH
   (ridge), Coxnet (elastic net) and FastSurvivalSVM a hyper-parameter search by inner
   5-fold cross-validation scored by Harrell's C;
2. on the **test split**: Harrell's C, Uno's C-IPCW, the mean cumulative/dynamic AUC, the
   integrated Brier score (not FSVM) and a C-index with ties broken at random.

Two backends run the same protocol. ``"sksurv"`` is scikit-survival's estimators in
``GridSearchCV`` (the reference); ``"torch"`` solves all inner folds x grid points x outer
folds of CoxPH, Coxnet and FSVM in one batched torch call each (:mod:`.torch_models`),
reads the RSF depth grid off one deep forest per inner fold, and computes the metrics with
:mod:`.torch_metrics`. RSF itself is always scikit-survival's.

A fit that raises (Coxnet's "weights too large", an overflowing Cox model, a singular
system) or does not converge is retried with a stronger penalty; if it still fails, its
metric rows are written with ``value = NaN``, ``status = "failed"`` and the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sksurv.ensemble import RandomSurvivalForest
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.svm import FastSurvivalSVM
from sksurv.util import Surv
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.evaluation import torch_metrics
from radiopath.evaluation._cox import DTYPE, resolve_device, torch_threads
from radiopath.evaluation.config import (
    BACKENDS,
    MODELS,
    SURVIVAL_FUNCTION_MODELS,
    resolve_evaluation_config,
    screening_enabled,
)
from radiopath.evaluation.screening import select_features, univariate_cox_pvalues
from radiopath.evaluation.torch_models import (
    TorchCoxnet,
    TorchCoxPH,
    TorchFastSurvivalSVM,
    fit_cox_ridge,
    fit_coxnet_path,
    fit_survival_svm,
    survival_ranks,
)
from radiopath.io import FoldEmbeddings
from radiopath.runkit import write_bytes

log = logging.getLogger(__name__)

__all__ = [
    "EvaluationResult",
    "FittedModel",
    "PreparedFold",
    "evaluate_folds",
    "forest_depth_risks",
    "prepare_fold",
]

PREDICTION_COLUMNS = [
    "aggregator",
    "modalities",
    "model",
    "fold",
    "patient_id",
    "time",
    "event",
    "risk",
]
METRIC_COLUMNS = [
    "aggregator",
    "modalities",
    "model",
    "fold",
    "metric",
    "value",
    "status",
    "message",
]
SELECTION_COLUMNS = [
    "aggregator",
    "modalities",
    "model",
    "fold",
    "n_features",
    "params",
    "cv_score",
    "status",
    "message",
    "train_risk_mean",
    "train_risk_median",
]

# what a numerical failure of a fit looks like (LinAlgError is a ValueError subclass)
FIT_ERRORS = (ArithmeticError, ValueError, np.linalg.LinAlgError)


class FitFailed(RuntimeError):
    """A model could not be fitted on one fold, even with a stronger penalty."""


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


@dataclass
class FittedModel:
    """A downstream model fitted on one outer fold, with its test predictions."""

    model: str
    fold: int
    estimator: object | None
    params: dict
    cv_score: float
    status: str
    message: str
    test_risk: np.ndarray | None = None
    train_risk: np.ndarray | None = None
    test_survival: np.ndarray | None = None  # [n_test, n_times] at PreparedFold.times


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folds` returns.

    Attributes
    ----------
    predictions
        ``aggregator, modalities, model, fold, patient_id, time, event, risk`` (test folds).
    metrics
        ``aggregator, modalities, model, fold, metric, value, status, message``.
    selection
        Chosen hyper-parameters, number of features, inner-CV score and the mean / median
        training risk (the Kaplan-Meier group thresholds) per model and fold.
    fitted
        ``{(model, fold): FittedModel}`` -- the fitted estimators themselves.
    prepared
        The :class:`PreparedFold` of each fold (selected features, scaler, time grid).
    """

    predictions: pd.DataFrame
    metrics: pd.DataFrame
    selection: pd.DataFrame
    fitted: dict = field(default_factory=dict)
    prepared: list = field(default_factory=list)


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
    p_lo, p_hi = cfg["metrics"]["time_percentiles"]
    q = np.linspace(float(p_lo), float(p_hi), int(cfg["metrics"]["n_times"]))
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
    fold: FoldEmbeddings, *, aggregator: str, config: Mapping | None = None, seed: int = 0
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
            pvalues, float(cfg["screening"]["p_threshold"]), int(cfg["screening"]["min_features"])
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
        splits=_inner_splits(event[tr], int(cfg["cv"]["n_splits"]), seed + int(fold.fold)),
        train_problem=train_problem,
        test_problem=test_problem,
        grid_problem=grid_problem,
    )


# ----------------------------------------------------------------------------- retries


def _stronger(model: str, params: dict, factor: float) -> dict:
    """The next, more strongly penalised, parameters of a failed fit."""
    p = dict(params)
    if model == "coxph":
        p["alpha"] = max(float(p["alpha"]) * factor, 1e-2)
    elif model == "coxnet":
        p["alphas"] = [float(a) * factor for a in p["alphas"]]
    elif model == "fsvm":
        p["alpha"] = float(p["alpha"]) / factor
    else:
        raise FitFailed(f"{model} has no penalty to strengthen")
    return p


def _describe(params: Mapping) -> str:
    return ", ".join(
        f"{k}={v[0] if isinstance(v, list) and len(v) == 1 else v:.4g}"
        if isinstance(v, float) or (isinstance(v, list) and len(v) == 1)
        else f"{k}={v}"
        for k, v in params.items()
    )


def fit_with_retry(model: str, make, params: dict, X, y, retry: Mapping):
    """Fit ``make(**params)``; on an error or non-convergence retry with a stronger penalty.

    Returns ``(estimator, params, status, message)``; ``status`` is ``"ok"``,
    ``"retried"`` (a stronger penalty was needed) or ``"not_converged"`` (kept, flagged).
    Raises :class:`FitFailed` when every attempt raised.
    """
    max_retries = int(retry["max_retries"]) if model != "rsf" else 0
    factor = float(retry["factor"])
    notes: list[str] = []
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                est = make(**params).fit(X, y)
            conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
            if conv and attempt < max_retries:
                notes.append(f"{_describe(params)} did not converge ({conv[0].message})")
                params = _stronger(model, params, factor)
                attempt += 1
                continue
            if conv:
                notes.append(f"{_describe(params)} did not converge ({conv[0].message})")
                return est, params, "not_converged", "; ".join(notes)
            if notes:
                notes.append(f"refit with {_describe(params)}")
            return est, params, ("retried" if notes else "ok"), "; ".join(notes)
        except FIT_ERRORS as exc:
            notes.append(f"{_describe(params)}: {type(exc).__name__}: {exc}")
            if attempt >= max_retries:
                raise FitFailed("; ".join(notes)) from exc
            params = _stronger(model, params, factor)
            attempt += 1


# ----------------------------------------------------------------------------- RSF depth trick


def forest_depth_risks(
    forest: RandomSurvivalForest, X: np.ndarray, depths: Sequence[int | None]
) -> np.ndarray:
    """Risk scores of a fitted forest with every tree cut at each of ``depths``.

    A scikit-survival tree stores the Nelson-Aalen cumulative hazard of the (bootstrap)
    samples of *every* node, not only of its leaves, so a tree grown to depth D and read at
    depth d < D predicts what a tree grown with ``max_depth=d`` would (node splits depend
    only on the samples in the node). The risk is the forest's: the cumulative hazard summed
    over the training event times, averaged over trees. ``None`` means the full depth.

    Returns ``[len(depths), n_samples]``.
    """
    X32 = np.asarray(X, dtype=np.float32)
    n = X32.shape[0]
    rows = np.arange(n)
    limits = [np.inf if d is None else int(d) for d in depths]
    order = np.argsort(limits, kind="mergesort")
    out = np.zeros((len(depths), n))
    for est in forest.estimators_:
        tree = est.tree_
        node_risk = tree.value[:, est.is_event_time_, 0].sum(1)
        left, right = tree.children_left, tree.children_right
        feature, threshold = tree.feature, tree.threshold
        nodes = np.zeros(n, dtype=np.intp)
        depth = 0
        for k in order:
            while depth < limits[k]:
                leaf = left[nodes] == -1
                if leaf.all():
                    break
                go_left = X32[rows, np.where(leaf, 0, feature[nodes])] <= threshold[nodes]
                nodes = np.where(leaf, nodes, np.where(go_left, left[nodes], right[nodes]))
                depth += 1
            out[k] += node_risk[nodes]
    return out / len(forest.estimators_)


# ----------------------------------------------------------------------------- helpers


def _harrell_cv(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    member: torch.Tensor,
    tied_tol: float = 1e-8,
    chunk: int = 256,
) -> torch.Tensor:
    """Harrell's C of B risk vectors on B validation subsets: ``[B, n]`` -> ``[B]`` (NaN if no pair)."""
    out = []
    for s in range(0, risk.shape[0], chunk):
        r, t, e, m = (
            risk[s : s + chunk],
            time[s : s + chunk],
            event[s : s + chunk],
            member[s : s + chunk],
        )
        ti, tj = t.unsqueeze(2), t.unsqueeze(1)
        comp = (e & m).unsqueeze(2) & m.unsqueeze(1) & ((tj > ti) | ((tj == ti) & ~e.unsqueeze(1)))
        diff = r.unsqueeze(2) - r.unsqueeze(1)  # risk_i - risk_j
        tie = diff.abs() <= tied_tol
        score = torch.where(tie, 0.5, (diff > 0).to(DTYPE))
        num = (comp * score).sum((1, 2))
        den = comp.sum((1, 2)).to(DTYPE)
        out.append(torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, torch.nan)))
    return torch.cat(out)


def _pad(preps: Sequence[PreparedFold], device) -> dict:
    F = len(preps)
    n = max(len(p.y_train) for p in preps)
    d = max(p.X_train.shape[1] for p in preps)
    X = torch.zeros(F, n, d, dtype=DTYPE, device=device)
    time = torch.zeros(F, n, dtype=DTYPE, device=device)
    event = torch.zeros(F, n, dtype=torch.bool, device=device)
    weight = torch.zeros(F, n, dtype=DTYPE, device=device)
    fmask = torch.zeros(F, d, dtype=DTYPE, device=device)
    for f, p in enumerate(preps):
        k, q = p.X_train.shape
        X[f, :k, :q] = torch.as_tensor(p.X_train, dtype=DTYPE, device=device)
        time[f, :k] = torch.as_tensor(p.train_time, dtype=DTYPE, device=device)
        event[f, :k] = torch.as_tensor(p.train_event, device=device)
        weight[f, :k] = 1
        fmask[f, :q] = 1
    S = max(len(p.splits) for p in preps)
    train_w = torch.zeros(F, S, n, dtype=DTYPE, device=device)
    val_m = torch.zeros(F, S, n, dtype=torch.bool, device=device)
    split_ok = torch.zeros(F, S, dtype=torch.bool, device=device)
    for f, p in enumerate(preps):
        for s, (tr, va) in enumerate(p.splits):
            train_w[f, s, torch.as_tensor(tr, device=device)] = 1
            val_m[f, s, torch.as_tensor(va, device=device)] = True
            split_ok[f, s] = True
    return dict(
        X=X,
        time=time,
        event=event,
        weight=weight,
        fmask=fmask,
        train_w=train_w,
        val_m=val_m,
        split_ok=split_ok,
        F=F,
        S=S,
        n=n,
        d=d,
    )


def _select(scores: np.ndarray) -> tuple[int, float]:
    """Index of the best mean inner-CV score (first on ties, as GridSearchCV), and the score."""
    if np.all(np.isnan(scores)):
        return -1, float("nan")
    i = int(np.nanargmax(scores))
    return i, float(scores[i])


def _survival_at(estimator, X: np.ndarray, times: np.ndarray | None, **kw) -> np.ndarray | None:
    if times is None:
        return None
    fns = estimator.predict_survival_function(X, **kw)
    return np.vstack([fn(times) for fn in fns])


def _finish(model, prep, est, params, cv_score, status, message, predict_kw=None) -> FittedModel:
    kw = predict_kw or {}
    test_risk = np.asarray(est.predict(prep.X_test, **kw), dtype=np.float64)
    train_risk = np.asarray(est.predict(prep.X_train, **kw), dtype=np.float64)
    surv = (
        _survival_at(est, prep.X_test, prep.times, **kw)
        if model in SURVIVAL_FUNCTION_MODELS
        else None
    )
    return FittedModel(
        model, prep.fold, est, params, cv_score, status, message, test_risk, train_risk, surv
    )


def _failed(model, prep, params, cv_score, message) -> FittedModel:
    log.warning("%s, fold %d: fit failed: %s", model, prep.fold, message)
    return FittedModel(model, prep.fold, None, params, cv_score, "failed", message)


# ----------------------------------------------------------------------------- sksurv backend


def _make_sksurv(model: str, cfg: Mapping, seed: int):
    if model == "rsf":
        c = cfg["rsf"]

        def make(**p):
            return RandomSurvivalForest(
                n_estimators=int(c["n_estimators"]),
                min_samples_split=int(c["min_samples_split"]),
                min_samples_leaf=int(c["min_samples_leaf"]),
                max_features=c["max_features"],
                n_jobs=int(c["n_jobs"]),
                random_state=seed,
                **p,
            )
    elif model == "coxph":

        def make(**p):
            return CoxPHSurvivalAnalysis(
                n_iter=int(cfg["coxph"]["n_iter"]), tol=float(cfg["coxph"]["tol"]), **p
            )
    elif model == "coxnet":

        def make(**p):
            return CoxnetSurvivalAnalysis(
                tol=float(cfg["coxnet"]["tol"]),
                max_iter=int(cfg["coxnet"]["max_iter"]),
                fit_baseline_model=True,
                **p,
            )
    elif model == "fsvm":

        def make(**p):
            return FastSurvivalSVM(
                optimizer=cfg["fsvm"]["optimizer"],
                max_iter=int(cfg["fsvm"]["max_iter"]),
                random_state=seed,
                **p,
            )
    else:
        raise RadiopathInputError(
            f"unknown model {model!r}; expected some of {MODELS}", field="models"
        )
    return make


def _sksurv_grid(model: str, prep: PreparedFold, cfg: Mapping, make) -> list[dict] | dict:
    if model == "rsf":
        return {"max_depth": list(cfg["rsf"]["max_depth"])}
    if model == "coxph":
        return {"alpha": [float(a) for a in cfg["coxph"]["alpha"]]}
    if model == "fsvm":
        return {"alpha": [float(a) for a in cfg["fsvm"]["alpha"]]}
    grids = []
    for r in cfg["coxnet"]["l1_ratio"]:
        # the alpha path of the whole training split, as scikit-survival's user guide does
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = CoxnetSurvivalAnalysis(
                l1_ratio=float(r),
                n_alphas=int(cfg["coxnet"]["n_alphas"]),
                alpha_min_ratio=cfg["coxnet"]["alpha_min_ratio"],
                tol=float(cfg["coxnet"]["tol"]),
                max_iter=int(cfg["coxnet"]["max_iter"]),
            ).fit(prep.X_train, prep.y_train)
        grids.append({"l1_ratio": [float(r)], "alphas": [[float(a)] for a in path.alphas_]})
    return grids


def _fit_sksurv(model: str, prep: PreparedFold, cfg: Mapping, seed: int) -> FittedModel:
    make = _make_sksurv(model, cfg, seed)
    inner_make = make
    if model == "rsf":
        # one job per forest inside the search, the search itself is parallel
        def inner_make(**p):
            return make(**p).set_params(n_jobs=1)

    try:
        grid = _sksurv_grid(model, prep, cfg, make)
    except FIT_ERRORS as exc:
        return _failed(model, prep, {}, float("nan"), f"alpha path: {type(exc).__name__}: {exc}")
    search = GridSearchCV(
        inner_make(),
        grid,
        cv=prep.splits,
        error_score=np.nan,
        refit=False,
        n_jobs=int(cfg["n_jobs"]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            search.fit(prep.X_train, prep.y_train)
            scores = np.asarray(search.cv_results_["mean_test_score"], dtype=float)
        except ValueError as exc:
            # scikit-learn raises when every fit of the search failed
            log.info(
                "%s fold %d: every inner-CV fit failed (%s)",
                model,
                prep.fold,
                str(exc).strip()[:200],
            )
            scores = None
    candidates = list(ParameterGrid(grid))
    if scores is None:
        scores = np.full(len(candidates), np.nan)
    best, cv_score = _select(scores)
    if best < 0:
        # every grid point failed inside the CV: start from the most penalised one
        best = _most_penalised(model, candidates)
    params = dict(candidates[best])
    try:
        est, params, status, message = fit_with_retry(
            model, make, params, prep.X_train, prep.y_train, cfg["retry"]
        )
    except FitFailed as exc:
        return _failed(model, prep, params, cv_score, str(exc))
    return _finish(model, prep, est, _clean(params), cv_score, status, message)


def _most_penalised(model: str, candidates: list[dict]) -> int:
    if model == "coxph":
        return int(np.argmax([c["alpha"] for c in candidates]))
    if model == "coxnet":
        return int(np.argmax([c["alphas"][0] for c in candidates]))
    if model == "fsvm":
        return int(np.argmin([c["alpha"] for c in candidates]))
    return 0


def _clean(params: Mapping) -> dict:
    out = {}
    for k, v in params.items():
        if k == "alphas":
            out["alpha"] = float(v[0])
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- torch backend


def _rsf_truncated(prep: PreparedFold, cfg: Mapping, seed: int) -> FittedModel:
    """RSF with its depth grid read off one deep forest per inner fold, then a real refit."""
    make = _make_sksurv("rsf", cfg, seed)
    depths = list(cfg["rsf"]["max_depth"])
    deepest = None if any(d is None for d in depths) else max(int(d) for d in depths)
    scores = np.full((len(prep.splits), len(depths)), np.nan)
    for s, (tr, va) in enumerate(prep.splits):
        try:
            forest = make(max_depth=deepest).fit(prep.X_train[tr], prep.y_train[tr])
        except FIT_ERRORS as exc:
            log.info("rsf fold %d inner split %d failed: %s", prep.fold, s, exc)
            continue
        risks = forest_depth_risks(forest, prep.X_train[va], depths)
        yv = prep.y_train[va]
        for k in range(len(depths)):
            try:
                scores[s, k] = torch_metrics.concordance_index_censored(
                    yv["event"], yv["time"], risks[k]
                )[0]
            except (ValueError, NoComparablePairException):
                pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(scores, 0)
    best, cv_score = _select(mean)
    params = {"max_depth": depths[max(best, 0)]}
    try:
        est, params, status, message = fit_with_retry(
            "rsf", make, params, prep.X_train, prep.y_train, cfg["retry"]
        )
    except FitFailed as exc:
        return _failed("rsf", prep, params, cv_score, str(exc))
    return _finish("rsf", prep, est, params, cv_score, status, message)


def _mean_cv(scores: torch.Tensor, ok: torch.Tensor) -> np.ndarray:
    """Mean over inner splits, ignoring NaN and absent splits: ``[F, S, G]`` -> ``[F, G]``."""
    s = torch.where(ok.unsqueeze(-1), scores, torch.full_like(scores, torch.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(s.cpu().numpy(), axis=1)


def _grid_problems(
    F: int, S: int, G: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold, inner-split and grid-point index of each batched problem, ordered (fold, split, point)."""
    fi = torch.arange(F, device=device).repeat_interleave(S * G)
    si = torch.arange(S, device=device).repeat_interleave(G).repeat(F)
    gi = torch.arange(G, device=device).repeat(F * S)
    return fi, si, gi


def _choose_by_inner_cv(risk, failed, P, fi, si, alphas, fallback) -> list[tuple[float, float]]:
    """Per outer fold, the grid value with the best mean validation C-index, and that score.

    Failed fits score NaN; a fold where every fit failed falls back to ``fallback`` (the
    most penalised value).
    """
    F, S, G = P["F"], P["S"], len(alphas)
    score = _harrell_cv(risk, P["time"][fi], P["event"][fi], P["val_m"][fi, si])
    score = torch.where(failed, torch.full_like(score, torch.nan), score)
    mean = _mean_cv(score.view(F, S, G), P["split_ok"])
    chosen = []
    for f in range(F):
        best, cv = _select(mean[f])
        chosen.append((alphas[best] if best >= 0 else fallback, cv))
    return chosen


def _torch_coxph(preps, cfg, device, seed) -> list[FittedModel]:
    P = _pad(preps, device)
    F, S = P["F"], P["S"]
    alphas = [float(a) for a in cfg["coxph"]["alpha"]]
    G = len(alphas)
    fi, si, gi = _grid_problems(F, S, G, device)
    a = torch.as_tensor(alphas, dtype=DTYPE, device=device)[gi]
    res = fit_cox_ridge(
        P["X"][fi],
        P["time"][fi],
        P["event"][fi],
        a,
        sample_weight=P["train_w"][fi, si],
        feature_mask=P["fmask"][fi],
        n_iter=int(cfg["coxph"]["n_iter"]),
        tol=float(cfg["coxph"]["tol"]),
        device=device,
    )
    risk = torch.bmm(P["X"][fi], res.coef.unsqueeze(-1)).squeeze(-1)
    chosen = _choose_by_inner_cv(risk, res.failed, P, fi, si, alphas, fallback=max(alphas))
    return _torch_refit("coxph", preps, P, chosen, cfg, device, seed)


def _torch_fsvm(preps, cfg, device, seed) -> list[FittedModel]:
    P = _pad(preps, device)
    F, S, n = P["F"], P["S"], P["n"]
    alphas = [float(a) for a in cfg["fsvm"]["alpha"]]
    G = len(alphas)
    ranks = torch.zeros(F, n, dtype=DTYPE, device=device)
    for f, p in enumerate(preps):
        ranks[f, : len(p.y_train)] = torch.as_tensor(
            survival_ranks(p.train_time, seed), dtype=DTYPE, device=device
        )
    fi, si, gi = _grid_problems(F, S, G, device)
    a = torch.as_tensor(alphas, dtype=DTYPE, device=device)[gi]
    res = fit_survival_svm(
        P["X"][fi],
        ranks[fi],
        P["event"][fi].to(DTYPE),
        a,
        sample_weight=P["train_w"][fi, si],
        feature_mask=P["fmask"][fi],
        max_iter=int(cfg["fsvm"]["torch_max_iter"]),
        tol=float(cfg["fsvm"]["torch_tol"]),
        device=device,
    )
    risk = -torch.bmm(P["X"][fi], res.coef.unsqueeze(-1)).squeeze(-1)
    chosen = _choose_by_inner_cv(risk, res.failed, P, fi, si, alphas, fallback=min(alphas))
    return _torch_refit("fsvm", preps, P, chosen, cfg, device, seed)


def _torch_refit(model, preps, P, chosen, cfg, device, seed) -> list[FittedModel]:
    """Refit each fold at its chosen penalty on the whole training split, batched; retry failures."""
    F = P["F"]
    retry = cfg["retry"]
    factor = float(retry["factor"])
    alpha = np.array([c[0] for c in chosen], dtype=float)
    notes: list[list[str]] = [[] for _ in range(F)]
    todo = np.arange(F)
    coef = [None] * F
    status = ["ok"] * F
    ranks = None
    if model == "fsvm":
        ranks = torch.zeros(F, P["n"], dtype=DTYPE, device=device)
        for f, p in enumerate(preps):
            ranks[f, : len(p.y_train)] = torch.as_tensor(
                survival_ranks(p.train_time, seed), dtype=DTYPE, device=device
            )
    for attempt in range(int(retry["max_retries"]) + 1):
        if todo.size == 0:
            break
        idx = torch.as_tensor(todo, device=device)
        a = torch.as_tensor(alpha[todo], dtype=DTYPE, device=device)
        if model == "coxph":
            res = fit_cox_ridge(
                P["X"][idx],
                P["time"][idx],
                P["event"][idx],
                a,
                sample_weight=P["weight"][idx],
                feature_mask=P["fmask"][idx],
                n_iter=int(cfg["coxph"]["n_iter"]),
                tol=float(cfg["coxph"]["tol"]),
                device=device,
            )
        else:
            res = fit_survival_svm(
                P["X"][idx],
                ranks[idx],
                P["event"][idx].to(DTYPE),
                a,
                sample_weight=P["weight"][idx],
                feature_mask=P["fmask"][idx],
                max_iter=int(cfg["fsvm"]["torch_max_iter"]),
                tol=float(cfg["fsvm"]["torch_tol"]),
                device=device,
            )
        again = []
        for j, f in enumerate(todo):
            failed, conv = bool(res.failed[j]), bool(res.converged[j])
            if failed or not conv:
                what = "overflow or singular system" if failed else "did not converge"
                notes[f].append(f"alpha={alpha[f]:.4g}: {what}")
                if attempt < int(retry["max_retries"]):
                    alpha[f] = (
                        max(alpha[f] * factor, 1e-2) if model == "coxph" else alpha[f] / factor
                    )
                    again.append(f)
                    continue
                if failed:
                    coef[f] = None
                    status[f] = "failed"
                    continue
                status[f] = "not_converged"
            elif notes[f]:
                status[f] = "retried"
                notes[f].append(f"refit with alpha={alpha[f]:.4g}")
            q = preps[f].X_train.shape[1]
            coef[f] = res.coef[j, :q].cpu().numpy()
        todo = np.array(again, dtype=int)
    out = []
    for f, p in enumerate(preps):
        params = {"alpha": float(alpha[f])}
        if coef[f] is None:
            out.append(_failed(model, p, params, chosen[f][1], "; ".join(notes[f])))
            continue
        if model == "coxph":
            est = TorchCoxPH.from_coef(
                coef[f],
                p.X_train,
                p.train_event,
                p.train_time,
                alpha=float(alpha[f]),
                device=str(device),
            )
        else:
            est = TorchFastSurvivalSVM.from_coef(
                coef[f], alpha=float(alpha[f]), random_state=seed, device=str(device)
            )
        out.append(_finish(model, p, est, params, chosen[f][1], status[f], "; ".join(notes[f])))
    return out


def _torch_coxnet(preps, cfg, device, seed) -> list[FittedModel]:
    """Coxnet on every fold at once: alpha grids, one batched path call, then a polish.

    1. the alpha path of each (fold, l1_ratio) on the whole training split (scikit-survival's
       grid: from the smallest alpha that zeroes every coefficient down to
       ``alpha_min_ratio`` times it);
    2. one batched, warm-started path solve of the training split and of every inner-CV
       training subset along that grid (loose tolerance: it only ranks alphas); the
       training-split paths also give scikit-survival's early stop of the path;
    3. the chosen (l1_ratio, alpha) of each fold re-solved to ``torch_tol`` from its path
       solution. A path that fails is retried with a larger ``alpha_min_ratio``.
    """
    c = cfg["coxnet"]
    P = _pad(preps, device)
    F, S = P["F"], P["S"]
    ratios = [float(r) for r in c["l1_ratio"]]
    R = len(ratios)
    retry = cfg["retry"]
    A = int(c["n_alphas"])
    fi = torch.arange(F, device=device).repeat_interleave(R)
    ri = torch.as_tensor(ratios, dtype=DTYPE, device=device).repeat(F)
    common = dict(max_iter=int(c["torch_max_iter"]), device=device)
    min_ratio = np.full(F * R, float(c["alpha_min_ratio"]))
    notes = [[] for _ in range(F)]
    paths: list = [None] * (F * R)  # (alphas [k], coefs [k, p]) of the training split
    scores = np.full((F, R, A), np.nan)
    todo = np.arange(F * R)
    for attempt in range(int(retry["max_retries"]) + 1):
        if todo.size == 0:
            break
        idx = torch.as_tensor(todo, device=device)
        grid = torch.cat(
            [
                fit_coxnet_path(
                    P["X"][fi[idx[j : j + 1]]],
                    P["time"][fi[idx[j : j + 1]]],
                    P["event"][fi[idx[j : j + 1]]],
                    l1_ratio=ri[idx[j : j + 1]],
                    n_alphas=A,
                    alpha_min_ratio=float(min_ratio[b]),
                    sample_weight=P["weight"][fi[idx[j : j + 1]]],
                    feature_mask=P["fmask"][fi[idx[j : j + 1]]],
                    grid_only=True,
                    device=device,
                ).alphas
                for j, b in enumerate(todo)
            ]
        )  # [T, A]
        T = len(todo)
        # problems: T training splits, then T x S inner-CV training subsets
        pf_ = torch.cat([fi[idx], fi[idx].repeat_interleave(S)])
        pr = torch.cat([ri[idx], ri[idx].repeat_interleave(S)])
        pg = torch.cat([grid, grid.repeat_interleave(S, 0)])
        si = torch.arange(S, device=device).repeat(T)
        weight = torch.cat([P["weight"][fi[idx]], P["train_w"][fi[idx].repeat_interleave(S), si]])
        res = fit_coxnet_path(
            P["X"][pf_],
            P["time"][pf_],
            P["event"][pf_],
            l1_ratio=pr,
            alphas=pg,
            sample_weight=weight,
            feature_mask=P["fmask"][pf_],
            tol=float(c["torch_cv_tol"]),
            **common,
        )
        X = P["X"][pf_[T:]]
        risk = torch.einsum("bnp,bap->ban", X, res.coef[T:])  # [T*S, A, n]
        Bn = risk.shape[0]
        t = P["time"][pf_[T:]].unsqueeze(1).expand(-1, A, -1).reshape(Bn * A, -1)
        e = P["event"][pf_[T:]].unsqueeze(1).expand(-1, A, -1).reshape(Bn * A, -1)
        m = P["val_m"][pf_[T:], si].unsqueeze(1).expand(-1, A, -1).reshape(Bn * A, -1)
        sc = _harrell_cv(risk.reshape(Bn * A, -1), t, e, m).view(T, S, A)
        sc = torch.where(res.failed[T:].view(T, S, 1), torch.full_like(sc, torch.nan), sc)
        ok = P["split_ok"][fi[idx]].unsqueeze(-1).expand(-1, -1, A)
        sc = torch.where(ok, sc, torch.full_like(sc, torch.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(sc.cpu().numpy(), axis=1)  # [T, A]
        again = []
        for j, b in enumerate(todo):
            if bool(res.failed[j]):
                notes[b // R].append(
                    f"l1_ratio={ratios[b % R]}: path failed at alpha_min_ratio={min_ratio[b]:.3g}"
                )
                if attempt < int(retry["max_retries"]):
                    min_ratio[b] = min(min_ratio[b] * float(retry["factor"]), 0.5)
                    again.append(b)
                continue
            k = int(res.n_alphas[j])
            paths[b] = (res.alphas[j, :k], res.coef[j, :k])
            scores[b // R, b % R, :k] = mean[j, :k]
        todo = np.array(again, dtype=int)

    # choose per fold, then polish the chosen alpha from its path solution
    chosen = []
    for f in range(F):
        best, cv = _select(scores[f].reshape(-1))
        if best < 0:
            alive = [b for b in range(f * R, f * R + R) if paths[b] is not None]
            if not alive:
                chosen.append(None)
                continue
            b, k = alive[0], 0  # the largest alpha of the first path: the most penalised model
        else:
            r_idx, k = divmod(best, A)
            b = f * R + r_idx
        chosen.append((b, k, cv))
    live = [f for f in range(F) if chosen[f] is not None]
    out: list[FittedModel | None] = [None] * F
    if live:
        lf = torch.as_tensor(live, device=device)
        alphas = torch.stack([paths[chosen[f][0]][0][chosen[f][1]] for f in live]).view(-1, 1)
        init = torch.stack([paths[chosen[f][0]][1][chosen[f][1]] for f in live])
        l1 = torch.as_tensor([ratios[chosen[f][0] % R] for f in live], dtype=DTYPE, device=device)
        fin = fit_coxnet_path(
            P["X"][lf],
            P["time"][lf],
            P["event"][lf],
            l1_ratio=l1,
            alphas=alphas,
            sample_weight=P["weight"][lf],
            feature_mask=P["fmask"][lf],
            tol=float(c["torch_tol"]),
            init=init,
            **common,
        )
        for j, f in enumerate(live):
            p = preps[f]
            b, k, cv = chosen[f]
            q = p.X_train.shape[1]
            alpha = float(alphas[j, 0])
            params = {"l1_ratio": ratios[b % R], "alpha": alpha}
            if bool(fin.failed[j]):
                out[f] = _failed(
                    "coxnet", p, params, cv, "; ".join([*notes[f], f"alpha={alpha:.4g}: overflow"])
                )
                continue
            est = TorchCoxnet.from_path(
                fin.coef[j, :1, :q].cpu().numpy(),
                [alpha],
                p.X_train,
                p.train_event,
                p.train_time,
                l1_ratio=ratios[b % R],
                fit_baseline_model=True,
                device=str(device),
            )
            status = "ok" if bool(fin.converged[j, 0]) else "not_converged"
            msg = list(notes[f])
            if status == "not_converged":
                msg.append(f"alpha={alpha:.4g} reached torch_max_iter")
            elif msg:
                status = "retried"
            out[f] = _finish("coxnet", p, est, params, cv, status, "; ".join(msg))
    for f in range(F):
        if out[f] is None:
            out[f] = _failed(
                "coxnet", preps[f], {}, float("nan"), "; ".join(notes[f]) or "no alpha path"
            )
    return out


# ----------------------------------------------------------------------------- metrics


def _metric_values(
    prep: PreparedFold, fm: FittedModel, backend: str, cfg: Mapping, device, seed: int
):
    """Yield ``(metric, value, status, message)`` for one fitted model on its test split."""
    names = ["c_index", "c_ipcw", "c_auc"]
    if fm.model in SURVIVAL_FUNCTION_MODELS:
        names.append("ibs")
    names.append("c_index_random_ties")
    problem = (
        prep.train_problem or (fm.message if fm.status == "failed" else None) or prep.test_problem
    )
    if problem is not None:
        for name in names:
            yield name, float("nan"), "failed", problem
        return
    if backend == "torch":
        M, kw = torch_metrics, {"device": device}
    else:
        import sksurv.metrics as M

        kw = {}
    tol = float(cfg["metrics"]["tied_tol"])
    yt, ye = prep.y_test, prep.y_test_eval
    risk = fm.test_risk
    note = fm.message if fm.status != "ok" else ""
    status = fm.status if fm.status in ("retried", "not_converged") else "ok"

    def attempt(name, fn):
        try:
            value = float(fn())
            if not math.isfinite(value):
                return name, float("nan"), "failed", f"{name} is not finite"
            return name, value, status, note
        except (ValueError, NoComparablePairException, ZeroDivisionError) as exc:
            return name, float("nan"), "failed", f"{type(exc).__name__}: {exc}"

    yield attempt(
        "c_index",
        lambda: M.concordance_index_censored(yt["event"], yt["time"], risk, tied_tol=tol, **kw)[0],
    )
    yield attempt(
        "c_ipcw",
        lambda: M.concordance_index_ipcw(prep.y_train, yt, risk, tau=prep.tau, tied_tol=tol, **kw)[
            0
        ],
    )
    if prep.times is None:
        yield "c_auc", float("nan"), "failed", prep.grid_problem
    else:
        yield attempt(
            "c_auc",
            lambda: M.cumulative_dynamic_auc(
                prep.y_train, ye, risk, prep.times, tied_tol=tol, **kw
            )[1],
        )
    if "ibs" in names:
        if prep.times is None or len(prep.times) < 2:
            why = (
                prep.grid_problem
                or "fewer than two evaluation times inside the follow-up: IBS is undefined"
            )
            yield "ibs", float("nan"), "failed", why
        else:
            yield attempt(
                "ibs",
                lambda: M.integrated_brier_score(
                    prep.y_train, ye, fm.test_survival, prep.times, **kw
                ),
            )
    yield attempt(
        "c_index_random_ties",
        lambda: c_index_random_ties(
            yt["event"],
            yt["time"],
            risk,
            int(cfg["metrics"]["random_tie_draws"]),
            seed=seed + prep.fold,
            tied_tol=tol,
        ),
    )


def c_index_random_ties(
    event, time, risk, n_draws: int = 100, *, seed: int = 0, tied_tol: float = 1e-8
) -> float:
    """Harrell's C with tied risk scores ordered at random, averaged over ``n_draws`` draws.

    For discrete scores (a clinical stage, a rounded model output) the convention of
    counting a tied pair as 1/2 flatters or penalises a score depending on the
    implementation; breaking ties at random (Boeke et al. 2025) treats every score alike.
    Risks within ``tied_tol`` form one tie group; within it the order is a random
    permutation per draw. The expectation equals Harrell's C with ties counted 1/2.
    """
    rng = np.random.default_rng(seed)
    risk = np.asarray(risk, dtype=np.float64)
    order = np.argsort(risk, kind="mergesort")
    sorted_risk = risk[order]
    group = np.concatenate([[0], np.cumsum(np.diff(sorted_risk) > tied_tol)])
    rank_of_group = np.empty_like(risk)
    rank_of_group[order] = group
    draws = np.empty((n_draws, risk.size))
    for k in range(n_draws):
        draws[k] = rank_of_group + rng.random(risk.size) * 0.5
    c = torch_metrics.concordance_index_censored(
        np.asarray(event, bool), time, draws, tied_tol=0.0
    )[0]
    return float(c.mean())


# ----------------------------------------------------------------------------- driver


def evaluate_folds(
    folds: Sequence[FoldEmbeddings],
    *,
    aggregator: str,
    modalities: Sequence[str] | str,
    models: Sequence[str] = MODELS,
    backend: str = "sksurv",
    config: Mapping | None = None,
    device="auto",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> EvaluationResult:
    """Run the downstream protocol on the per-fold embeddings of one aggregator.

    Parameters
    ----------
    folds
        One :class:`~radiopath.io.FoldEmbeddings` per outer fold.
    aggregator
        Its name (``"sparra"`` skips screening by default).
    modalities
        ``["wsi", "ct"]`` or ``"wsi+ct"``; written as a ``+``-joined string.
    models
        Some of ``rsf, coxph, coxnet, fsvm``.
    backend
        ``"sksurv"`` (reference) or ``"torch"`` (batched; RSF stays scikit-survival).
    config
        Overrides of :data:`radiopath.evaluation.config.DEFAULT_CONFIG`.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the torch backend.
    seed
        Inner-CV splits, random forests, tie-breaking.
    cache_dir
        Keep each finished (model, fold) fit here (its predictions, chosen parameters and
        inner-CV score, not the estimator), keyed by the fold's data, the configuration,
        backend and seed; an evaluation killed part-way resumes from the finished units.
        Units restored from the cache have ``estimator=None`` in ``fitted``.

    Returns
    -------
    EvaluationResult
    """
    cfg = resolve_evaluation_config(config)
    if backend not in BACKENDS:
        raise RadiopathInputError(
            f"unknown backend {backend!r}; expected one of {BACKENDS}", field="backend"
        )
    models = [models] if isinstance(models, str) else list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise RadiopathInputError(
            f"unknown model(s) {unknown}; expected some of {list(MODELS)}", field="models"
        )
    if not folds:
        raise RadiopathInputError("no fold embeddings to evaluate", field="folds")
    mods = modalities if isinstance(modalities, str) else "+".join(modalities)
    dev = resolve_device(device) if backend == "torch" else torch.device("cpu")
    folds = sorted(folds, key=lambda f: int(f.fold))
    seen = [int(f.fold) for f in folds]
    if len(set(seen)) != len(seen):
        raise RadiopathInputError(f"duplicate fold numbers {seen}", field="fold")

    cache = _UnitCache(cache_dir, folds, aggregator, backend, cfg, seed) if cache_dir else None
    with torch_threads(cfg["torch_threads"], dev):
        return _evaluate(folds, aggregator, mods, models, backend, cfg, dev, seed, cache)


class _UnitCache:
    """Finished (model, fold) fits of one evaluation, one small pickle each."""

    def __init__(self, folder, folds, aggregator, backend, cfg, seed) -> None:
        self.folder = Path(folder)
        settings = json.dumps(
            {"aggregator": aggregator, "backend": backend, "cfg": cfg, "seed": seed},
            sort_keys=True,
            default=str,
        )
        self.keys = {}
        for f in folds:
            h = hashlib.sha256(settings.encode())
            for arr in (f.patient_id, f.split, f.time, f.event, f.embedding):
                h.update(np.ascontiguousarray(np.asarray(arr)).tobytes())
            self.keys[int(f.fold)] = h.hexdigest()

    def _path(self, model: str, fold: int) -> Path:
        return self.folder / f"{model}.fold{fold}.pkl"

    def get(self, model: str, fold: int) -> FittedModel | None:
        path = self._path(model, fold)
        if not path.is_file():
            return None
        try:
            entry = pickle.loads(path.read_bytes())
        except Exception as exc:  # a damaged file: recompute the unit
            log.warning("%s is unreadable (%s); the fit is done again", path, exc)
            return None
        if entry.get("key") != self.keys[fold]:
            return None
        return entry["fitted"]

    def put(self, fm: FittedModel) -> None:
        light = dataclasses.replace(fm, estimator=None)
        write_bytes(
            self._path(fm.model, fm.fold),
            pickle.dumps({"key": self.keys[fm.fold], "fitted": light}),
        )


def _evaluate(
    folds, aggregator, mods, models, backend, cfg, dev, seed, cache=None
) -> EvaluationResult:
    preps = [prepare_fold(f, aggregator=aggregator, config=cfg, seed=seed) for f in folds]
    for p in preps:
        for problem in (p.train_problem, p.test_problem):
            if problem:
                log.warning("%s", problem)
    fittable = [p for p in preps if p.train_problem is None]
    fitted: dict[tuple[str, int], FittedModel] = {}
    for p in preps:
        if p.train_problem is not None:
            for m in models:
                fitted[(m, p.fold)] = FittedModel(
                    m, p.fold, None, {}, float("nan"), "failed", p.train_problem
                )

    strategy = cfg["rsf"]["cv_strategy"]
    if strategy == "auto":
        strategy = "truncate" if backend == "torch" else "grid"
    bar = tqdm(
        total=len(models) * len(fittable), desc=f"evaluate {aggregator}", leave=False, disable=None
    )
    for m in models:
        if cache is not None:
            for p in fittable:
                fm = cache.get(m, p.fold)
                if fm is not None:
                    fitted[(m, p.fold)] = fm
        todo = [p for p in fittable if (m, p.fold) not in fitted]
        bar.update(len(fittable) - len(todo))
        if backend == "torch" and m in ("coxph", "fsvm", "coxnet") and todo:
            # batched over folds; the batch is what the grid search sees, so a partly cached
            # model is fitted again on all its folds (identical results, one batch)
            runner = {"coxph": _torch_coxph, "fsvm": _torch_fsvm, "coxnet": _torch_coxnet}[m]
            with torch.no_grad():
                for fm in runner(fittable, cfg, dev, seed):
                    fitted[(m, fm.fold)] = fm
                    if cache is not None:
                        cache.put(fm)
            bar.update(len(todo))
            continue
        for p in todo:
            if m == "rsf" and strategy == "truncate":
                fm = _rsf_truncated(p, cfg, seed)
            else:
                fm = _fit_sksurv(m, p, cfg, seed)
            fitted[(m, p.fold)] = fm
            if cache is not None:
                cache.put(fm)
            bar.update(1)
    bar.close()

    pred_rows, metric_rows, sel_rows = [], [], []
    by_fold = {p.fold: p for p in preps}
    for m in models:
        for p in preps:
            fm = fitted[(m, p.fold)]
            key = {"aggregator": aggregator, "modalities": mods, "model": m, "fold": p.fold}
            if fm.test_risk is not None:
                for pid, t, e, r in zip(
                    p.test_ids, p.y_test["time"], p.y_test["event"], fm.test_risk
                ):
                    pred_rows.append(
                        {
                            **key,
                            "patient_id": pid,
                            "time": float(t),
                            "event": int(e),
                            "risk": float(r),
                        }
                    )
            for name, value, status, message in _metric_values(
                by_fold[p.fold], fm, backend, cfg, dev, seed
            ):
                metric_rows.append(
                    {
                        **key,
                        "metric": name,
                        "value": value,
                        "status": status,
                        "message": message or "",
                    }
                )
            sel_rows.append(
                {
                    **key,
                    "n_features": int(len(p.features)),
                    "params": json.dumps(fm.params, sort_keys=True, default=str),
                    "cv_score": fm.cv_score,
                    "status": fm.status,
                    "message": fm.message,
                    "train_risk_mean": float(np.mean(fm.train_risk))
                    if fm.train_risk is not None
                    else float("nan"),
                    "train_risk_median": float(np.median(fm.train_risk))
                    if fm.train_risk is not None
                    else float("nan"),
                }
            )
    return EvaluationResult(
        predictions=pd.DataFrame(pred_rows, columns=PREDICTION_COLUMNS),
        metrics=pd.DataFrame(metric_rows, columns=METRIC_COLUMNS),
        selection=pd.DataFrame(sel_rows, columns=SELECTION_COLUMNS),
        fitted=fitted,
        prepared=preps,
    )
