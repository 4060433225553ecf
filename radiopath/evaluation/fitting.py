"""One model fitted on one outer fold: the result record, retries and test predictions.

A fit that raises (Coxnet's "weights too large", an overflowing Cox model, a singular
system) or does not converge is retried with a stronger penalty (:func:`fit_with_retry`);
if it still fails, :class:`FitFailed` is raised and the fold's :class:`FittedModel` is
marked ``"failed"`` with the reason.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from radiopath.evaluation.config import SURVIVAL_FUNCTION_MODELS

log = logging.getLogger(__name__)

__all__ = ["FIT_ERRORS", "FitFailed", "FittedModel", "fit_with_retry"]

# what a numerical failure of a fit looks like (LinAlgError is a ValueError subclass)
FIT_ERRORS = (ArithmeticError, ValueError, np.linalg.LinAlgError)


class FitFailed(RuntimeError):
    """A model could not be fitted on one fold, even with a stronger penalty."""


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


# ----------------------------------------------------------------------------- helpers


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
