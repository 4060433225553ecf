"""Scoring one arm (an aggregator of one run) on the data and on every bootstrap replicate.

:func:`score_arm` reads an arm's out-of-fold predictions (and survival curves) and scores
every model on every fold for each replicate (:mod:`.weighted_metrics`); the result,
:class:`ArmScores`, gives each study's fold-mean statistic. Part of
:mod:`radiopath.evaluation.stats`, which re-exports these names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from radiopath.errors import RadiopathInputError
from radiopath.evaluation._cox import DTYPE, torch_threads
from radiopath.evaluation.bootstrap import FoldSetup, OutOfFold
from radiopath.evaluation.config import MODELS
from radiopath.evaluation.weighted_metrics import _score_fold

__all__ = ["ArmScores", "score_arm"]


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


def _fold_mean(v: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(v, axis=1)
