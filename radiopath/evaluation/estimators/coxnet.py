"""Elastic-net Cox along the alpha path (``CoxnetSurvivalAnalysis``) on the batched torch solver."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array, check_is_fitted
from sksurv.linear_model.coxph import BreslowEstimator

from radiopath.evaluation._cox import torch_threads
from radiopath.evaluation.estimators.base import _check_xy, _TorchEstimator
from radiopath.evaluation.torch_cox import fit_coxnet_path


class TorchCoxnet(_TorchEstimator):
    r"""Elastic-net Cox model along the alpha path, fitted in torch.

    A drop-in replacement for ``sksurv.linear_model.CoxnetSurvivalAnalysis`` (same
    objective, path, centring, early stop and interpolation of coefficients between
    alphas), solved by :func:`fit_coxnet_path`.

    Parameters
    ----------
    n_alphas, alphas, alpha_min_ratio, l1_ratio, penalty_factor
        As in scikit-survival.
    tol : float
        Infinity norm of the proximal-gradient residual at which an alpha is solved.
    max_iter : int
        Maximum iterations per alpha.
    fit_baseline_model : bool
        Fit Breslow baselines, one per alpha, for survival functions.
    device : str
    num_threads : int or None
        torch intra-op threads while fitting on CPU (None: torch's setting).

    Attributes
    ----------
    coef_ : ndarray, shape (n_features, n_alphas)
    alphas_, offset_, deviance_ratio_ : ndarray
    """

    def __init__(
        self,
        *,
        n_alphas: int = 100,
        alphas=None,
        alpha_min_ratio="auto",
        l1_ratio: float = 0.5,
        penalty_factor=None,
        tol: float = 1e-9,
        max_iter: int = 20000,
        fit_baseline_model: bool = False,
        device="auto",
        num_threads: int | None = 1,
    ):
        self.num_threads = num_threads
        self.n_alphas = n_alphas
        self.alphas = alphas
        self.alpha_min_ratio = alpha_min_ratio
        self.l1_ratio = l1_ratio
        self.penalty_factor = penalty_factor
        self.tol = tol
        self.max_iter = max_iter
        self.fit_baseline_model = fit_baseline_model
        self.device = device

    def fit(self, X, y):
        X, event, time = _check_xy(X, y)
        if not 0.0 < float(self.l1_ratio) <= 1.0:
            raise ValueError(f"l1_ratio must be in (0, 1], got {self.l1_ratio!r}")
        alphas = None if self.alphas is None else np.atleast_1d(np.asarray(self.alphas, float))
        with torch_threads(self.num_threads, self._device()):
            res = fit_coxnet_path(
                X,
                time,
                event,
                l1_ratio=self.l1_ratio,
                alphas=alphas,
                n_alphas=self.n_alphas,
                alpha_min_ratio=self.alpha_min_ratio,
                penalty_factor=self.penalty_factor,
                tol=self.tol,
                max_iter=self.max_iter,
                device=self._device(),
            )
        if bool(res.failed[0]):
            raise ArithmeticError(
                "Numerical error, because weights are too large. Consider increasing alpha."
            )
        k = int(res.n_alphas[0])
        if not bool(res.converged[0, :k].all()):
            warnings.warn(
                f"Optimization terminated early, you might want to increase the number of "
                f"iterations (max_iter={self.max_iter}).",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._store(res.coef[0, :k].T, res.alphas[0, :k], res.deviance_ratio[0, :k], X, event, time)
        return self

    def _store(self, coef, alphas, dev_ratio, X, event, time):
        coef = coef.cpu().numpy() if isinstance(coef, torch.Tensor) else np.asarray(coef)
        self.coef_ = coef
        self.alphas_ = (
            alphas.cpu().numpy() if isinstance(alphas, torch.Tensor) else np.asarray(alphas)
        )
        self.deviance_ratio_ = (
            dev_ratio.cpu().numpy()
            if isinstance(dev_ratio, torch.Tensor)
            else np.asarray(dev_ratio)
        )
        x_offset = X.mean(0)
        self.offset_ = x_offset @ coef
        self.n_features_in_ = X.shape[1]
        if self.fit_baseline_model:
            lp = (X - x_offset) @ coef
            self._baseline_models = tuple(
                BreslowEstimator().fit(lp[:, i], event, time) for i in range(coef.shape[1])
            )
        else:
            self._baseline_models = None

    @classmethod
    def from_path(cls, coef, alphas, X, event, time, deviance_ratio=None, **params) -> TorchCoxnet:
        """An estimator from a path solved elsewhere: ``coef`` is ``[n_alphas, n_features]``."""
        est = cls(**params)
        coef = np.asarray(coef, dtype=np.float64).T
        dev = np.full(coef.shape[1], np.nan) if deviance_ratio is None else deviance_ratio
        est._store(coef, np.asarray(alphas, float), dev, np.asarray(X, float), event, time)
        return est

    def _get_coef(self, alpha):
        check_is_fitted(self, "coef_")
        if alpha is None:
            return self.coef_[:, -1], self.offset_[-1]
        # scikit-survival's interpolation between the two neighbouring alphas of the path
        exact, idx = False, None
        for i, val in enumerate(self.alphas_):
            if val > alpha:
                idx = i
            elif alpha - val < np.finfo(float).eps:
                idx, exact = i, True
                break
        if idx is None:
            return self.coef_[:, 0], self.offset_[0]
        if exact or idx == len(self.alphas_) - 1:
            return self.coef_[:, idx], self.offset_[idx]
        a1, a2 = self.alphas_[idx + 1], self.alphas_[idx]
        frac = (alpha - a1) / (a2 - a1)
        coef = frac * self.coef_[:, idx] + (1.0 - frac) * self.coef_[:, idx + 1]
        offset = frac * self.offset_[idx] + (1.0 - frac) * self.offset_[idx + 1]
        return coef, offset

    def predict(self, X, alpha=None) -> np.ndarray:
        """Risk scores :math:`x^\\top\\beta_\\alpha` minus the training offset."""
        X = check_array(X, dtype=np.float64)
        coef, offset = self._get_coef(alpha)
        return X @ coef - offset

    def _baseline(self, alpha):
        if self._baseline_models is None:
            raise ValueError("`fit` must be called with the fit_baseline_model option set to True.")
        if alpha is None:
            return self._baseline_models[-1]
        close = np.isclose(alpha, self.alphas_)
        if not close.any():
            raise ValueError(f"alpha must be one value of alphas_: {self.alphas_}")
        return self._baseline_models[int(np.flatnonzero(close)[0])]

    def predict_survival_function(self, X, alpha=None, return_array: bool = False):
        """Survival functions from the Breslow baseline of ``alpha`` (a value of ``alphas_``)."""
        base = self._baseline(alpha)
        return self._predict_survival_function(base, self.predict(X, alpha=alpha), return_array)

    def predict_cumulative_hazard_function(self, X, alpha=None, return_array: bool = False):
        base = self._baseline(alpha)
        return self._predict_cumulative_hazard_function(
            base, self.predict(X, alpha=alpha), return_array
        )
