"""What the torch estimators share: input checks, the device and ``predict``."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array, check_is_fitted
from sksurv.base import SurvivalAnalysisMixin
from sksurv.util import check_array_survival

from radiopath.evaluation._cox import resolve_device


def _check_xy(X, y):
    X = check_array(X, dtype=np.float64, ensure_min_samples=2)
    event, time = check_array_survival(X, y)
    return X, event, time


class _TorchEstimator(BaseEstimator, SurvivalAnalysisMixin):
    def _device(self) -> torch.device:
        return resolve_device(getattr(self, "device", "auto"))

    def predict(self, X) -> np.ndarray:
        """Risk scores (higher = earlier event)."""
        check_is_fitted(self, "coef_")
        X = check_array(X, dtype=np.float64)
        return X @ self.coef_ - getattr(self, "_offset", 0.0)
