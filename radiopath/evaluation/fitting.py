"""One model fitted on one outer fold: the result record and its test predictions.

What is chosen, refit and retried is decided in :mod:`.selection`; a fold whose fit
failed even with a stronger penalty gets a :class:`FittedModel` marked ``"failed"`` with
the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from radiopath.evaluation.config import SURVIVAL_FUNCTION_MODELS

log = logging.getLogger(__name__)

__all__ = ["FIT_ERRORS", "FitFailed", "FittedModel"]

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


# ----------------------------------------------------------------------------- helpers


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
