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
grows RSF with the compiled forest of :mod:`.estimators.rsf` (scikit-survival's estimators and
split rule), reads its depth grid off one deep forest per inner fold, and computes the
metrics with :mod:`.torch_metrics`.

Both backends only score the grid; one routine (:mod:`.selection`) chooses each fold's grid
point, refits it and applies the retry policy: a fit that raises (Coxnet's "weights too
large", an overflowing Cox model, a singular system) or does not converge is retried with a
stronger penalty; if it still fails, its metric rows are written with ``value = NaN``,
``status = "failed"`` and the reason.

The parts live in their own modules: :mod:`.prepare` (checks, screening, scaling, inner
splits, time grid), :mod:`.selection` (the choice, the retry policy), :mod:`.fitting` (the
fitted-model record), :mod:`.sksurv_backend`, :mod:`.torch_backend` and :mod:`.metrics`. This module is the driver
(:func:`evaluate_folds`) and re-exports their public names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.evaluation._cox import resolve_device, torch_threads
from radiopath.evaluation.config import (
    BACKENDS,
    MODELS,
    EvaluationConfig,
    resolve_evaluation_config,
)

# the parts of the protocol, re-exported here; the driver calls them through this module
from radiopath.evaluation.fitting import FIT_ERRORS as FIT_ERRORS
from radiopath.evaluation.fitting import FitFailed as FitFailed
from radiopath.evaluation.fitting import FittedModel
from radiopath.evaluation.metrics import _metric_values
from radiopath.evaluation.metrics import c_index_random_ties as c_index_random_ties
from radiopath.evaluation.prepare import PreparedFold, prepare_fold
from radiopath.evaluation.prepare import _follow_up_adjusted as _follow_up_adjusted
from radiopath.evaluation.prepare import _time_grid as _time_grid
from radiopath.evaluation.sksurv_backend import fit_with_retry as fit_with_retry
from radiopath.evaluation.sksurv_backend import forest_depth_risks
from radiopath.evaluation.units import fit_unit, plan_units
from radiopath.executors import ExecutorArg, borrowed
from radiopath.io import FoldEmbeddings
from radiopath.runkit import config_fingerprint, write_bytes

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


# ----------------------------------------------------------------------------- driver


def evaluate_folds(
    folds: Sequence[FoldEmbeddings],
    *,
    aggregator: str,
    modalities: Sequence[str] | str,
    models: Sequence[str] = MODELS,
    backend: str = "sksurv",
    config: Mapping | EvaluationConfig | None = None,
    device="auto",
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    executor: ExecutorArg = None,
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
        An :class:`~radiopath.evaluation.config.EvaluationConfig`, or overrides of its
        defaults as a nested mapping.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"`` for the torch backend.
    seed
        Inner-CV splits, random forests, tie-breaking.
    cache_dir
        Keep each finished (model, fold) fit here (the fitted estimator with its
        predictions, chosen parameters and inner-CV score), keyed by the fold's data, the
        configuration, backend and seed; an evaluation killed part-way resumes from the
        finished units.
    executor
        Where the fits run (:mod:`radiopath.executors`; units: :mod:`.units`), default
        this process. The tables are the same on any executor.

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
    with torch_threads(cfg.num_threads, dev):
        return _evaluate(folds, aggregator, mods, models, backend, cfg, dev, seed, cache, executor)


class _UnitCache:
    """Finished (model, fold) fits of one evaluation, one small pickle each."""

    def __init__(self, folder, folds, aggregator, backend, cfg, seed) -> None:
        self.folder = Path(folder)
        settings = config_fingerprint(
            {"aggregator": aggregator, "backend": backend, "cfg": cfg.to_dict(), "seed": seed}
        )
        self.keys = {}
        for f in folds:  # the settings and the fold's data (its arrays' bytes)
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
        write_bytes(
            self._path(fm.model, fm.fold),
            pickle.dumps({"key": self.keys[fm.fold], "fitted": fm}),
        )


def _evaluate(
    folds, aggregator, mods, models, backend, cfg, dev, seed, cache=None, executor=None
) -> EvaluationResult:
    preps = [prepare_fold(f, aggregator=aggregator, config=cfg, seed=seed) for f in folds]
    for p in preps:
        for problem in (p.train_problem, p.test_problem):
            if problem:
                log.warning("%s", problem)
    fitted = _fit_models(preps, aggregator, models, backend, cfg, dev, seed, cache, executor)

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
            sel_rows.append(_selection_row(key, p, fm))
    return EvaluationResult(
        predictions=pd.DataFrame(pred_rows, columns=PREDICTION_COLUMNS),
        metrics=pd.DataFrame(metric_rows, columns=METRIC_COLUMNS),
        selection=pd.DataFrame(sel_rows, columns=SELECTION_COLUMNS),
        fitted=fitted,
        prepared=preps,
    )


def _fit_models(
    preps, aggregator, models, backend, cfg, dev, seed, cache, executor
) -> dict[tuple[str, int], FittedModel]:
    """``{(model, fold): FittedModel}`` of every model on every fold, model by model.

    A fold whose training split cannot be fitted gets a failed record for each model;
    finished units are read from ``cache``; the rest run as units on ``executor``.
    """
    fittable = [p for p in preps if p.train_problem is None]
    fitted: dict[tuple[str, int], FittedModel] = {}
    for p in preps:
        if p.train_problem is not None:
            for m in models:
                fitted[(m, p.fold)] = FittedModel(
                    m, p.fold, None, {}, float("nan"), "failed", p.train_problem
                )

    strategy = cfg.rsf.cv_strategy
    if strategy == "auto":
        strategy = "truncate" if backend == "torch" else "grid"
    engine = cfg.rsf.engine
    if engine == "auto":
        engine = "numba" if backend == "torch" else "sksurv"
    if cache is not None:
        for m in models:
            for p in fittable:
                fm = cache.get(m, p.fold)
                if fm is not None:
                    fitted[(m, p.fold)] = fm
    units = plan_units(models, fittable, set(fitted), backend)
    bar = tqdm(
        total=len(models) * len(fittable),
        initial=sum((m, p.fold) in fitted for m in models for p in fittable),
        desc=f"evaluate {aggregator}",
        leave=False,
        disable=None,
    )
    shared = {
        "preps": fittable,
        "cfg": cfg,
        "device": dev,
        "seed": seed,
        "strategy": strategy,
        "engine": engine,
        "cache": cache,
    }
    with borrowed(executor) as ex, bar:
        for done in ex.map_unordered(fit_unit, units, shared=shared):
            fits = done.result()
            for fm in fits:
                fitted[(fm.model, fm.fold)] = fm
            bar.update(len(fits))
    # model by model, fold by fold, whatever order the units finished in (the survival table
    # and the figures are written in this order)
    return {(m, p.fold): fitted[(m, p.fold)] for m in models for p in preps}


def _selection_row(key: dict, p: PreparedFold, fm: FittedModel) -> dict:
    """The selection-table row of one (model, fold)."""
    return {
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
