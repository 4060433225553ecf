"""scikit-survival-compatible estimators on the batched torch solvers.

:class:`TorchCoxPH`, :class:`TorchCoxnet` and :class:`TorchFastSurvivalSVM` have
scikit-survival's ``fit`` / ``predict`` API (see :mod:`.torch_models`); each fits one problem
with :func:`~.torch_cox.fit_cox_ridge`, :func:`~.torch_cox.fit_coxnet_path` or
:func:`~.torch_svm.fit_survival_svm`, or is built from coefficients the batched solvers found.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array, check_is_fitted
from sksurv.base import SurvivalAnalysisMixin
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.util import check_array_survival

from radiopath.evaluation._cox import resolve_device, torch_threads
from radiopath.evaluation.torch_cox import fit_cox_ridge, fit_coxnet_path
from radiopath.evaluation.torch_svm import fit_survival_svm, survival_ranks

__all__ = ["TorchCoxPH", "TorchCoxnet", "TorchFastSurvivalSVM"]

# ----------------------------------------------------------------------------- estimators


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


class TorchCoxPH(_TorchEstimator):
    r"""Cox proportional hazards model with a ridge penalty, fitted in torch.

    A drop-in replacement for ``sksurv.linear_model.CoxPHSurvivalAnalysis`` (Breslow ties)
    that minimises the same objective,
    :math:`\frac{1}{n}[-\ell(\beta) + \frac{\alpha}{2}\lVert\beta\rVert^2]` (Cox 1972), with
    the batched Newton solver :func:`fit_cox_ridge`. The baseline hazard is Breslow's
    estimator (scikit-survival's ``BreslowEstimator``), so survival functions are identical.

    Parameters
    ----------
    alpha : float
        Ridge penalty.
    n_iter : int
        Maximum Newton iterations.
    tol : float
        Stop when the relative change of the loss is below ``tol``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    num_threads : int or None
        torch intra-op threads while fitting on CPU (None: torch's setting).

    Attributes
    ----------
    coef_ : ndarray, shape (n_features,)
    cum_baseline_hazard_, baseline_survival_ : sksurv.functions.StepFunction
    unique_times_ : ndarray
    """

    def __init__(
        self,
        alpha: float = 0.0,
        *,
        n_iter: int = 100,
        tol: float = 1e-9,
        device="auto",
        num_threads: int | None = 1,
    ):
        self.alpha = alpha
        self.n_iter = n_iter
        self.tol = tol
        self.device = device
        self.num_threads = num_threads

    def fit(self, X, y):
        X, event, time = _check_xy(X, y)
        if float(self.alpha) < 0:
            raise ValueError(f"alpha must be positive, but was {self.alpha!r}")
        with torch_threads(self.num_threads, self._device()):
            res = fit_cox_ridge(
                X, time, event, self.alpha, n_iter=self.n_iter, tol=self.tol, device=self._device()
            )
        if bool(res.failed[0]):
            raise ArithmeticError(
                "Cox model overflowed or met a singular Hessian; consider increasing alpha."
            )
        if not bool(res.converged[0]):
            warnings.warn(
                "Optimization did not converge: Maximum number of iterations has been exceeded.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.coef_ = res.coef[0].cpu().numpy()
        self.n_features_in_ = X.shape[1]
        self._set_baseline(X @ self.coef_, event, time)
        return self

    def _set_baseline(self, lp, event, time):
        self._baseline_model = BreslowEstimator().fit(lp, event, time)

    @property
    def cum_baseline_hazard_(self):
        return self._baseline_model.cum_baseline_hazard_

    @property
    def baseline_survival_(self):
        return self._baseline_model.baseline_survival_

    @property
    def unique_times_(self):
        return self._baseline_model.unique_times_

    def predict_survival_function(self, X, return_array: bool = False):
        """Survival functions :math:`S_0(t)^{\\exp(x^\\top\\beta)}` (Breslow baseline)."""
        return self._predict_survival_function(self._baseline_model, self.predict(X), return_array)

    def predict_cumulative_hazard_function(self, X, return_array: bool = False):
        """Cumulative hazards :math:`H_0(t) \\exp(x^\\top\\beta)` (Breslow baseline)."""
        return self._predict_cumulative_hazard_function(
            self._baseline_model, self.predict(X), return_array
        )

    @classmethod
    def from_coef(cls, coef, X, event, time, **params) -> TorchCoxPH:
        """An estimator from coefficients solved elsewhere (a batched fit) on ``X``."""
        est = cls(**params)
        est.coef_ = np.asarray(coef, dtype=np.float64)
        est.n_features_in_ = est.coef_.shape[0]
        est._set_baseline(np.asarray(X, dtype=np.float64) @ est.coef_, event, time)
        return est


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


class TorchFastSurvivalSVM(_TorchEstimator):
    r"""Linear survival SVM with the ranking objective, fitted in torch.

    A drop-in replacement for ``sksurv.svm.FastSurvivalSVM(rank_ratio=1.0,
    fit_intercept=False)`` (Polsterl et al. 2015) solved by :func:`fit_survival_svm`. Tied
    times are ordered at random exactly as scikit-survival does for the same
    ``random_state``. ``predict`` returns risk scores :math:`-x^\top w`.

    Parameters
    ----------
    alpha : float
        Weight of the squared hinge loss (larger = less regularisation).
    rank_ratio : float
        Must be 1.0 (pure ranking).
    fit_intercept : bool
        Must be False.
    max_iter, tol : Newton iterations and gradient tolerance.
    random_state : int, RandomState or None
    device : str
    num_threads : int or None
        torch intra-op threads while fitting on CPU (None: torch's setting).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        rank_ratio: float = 1.0,
        fit_intercept: bool = False,
        max_iter: int = 100,
        tol: float = 1e-10,
        random_state=None,
        device="auto",
        num_threads: int | None = 1,
    ):
        self.num_threads = num_threads
        self.alpha = alpha
        self.rank_ratio = rank_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device

    def fit(self, X, y):
        X, event, time = _check_xy(X, y)
        if self.rank_ratio != 1.0 or self.fit_intercept:
            raise ValueError(
                "TorchFastSurvivalSVM implements rank_ratio=1.0, fit_intercept=False only"
            )
        if not float(self.alpha) > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        ranks = survival_ranks(time, self.random_state)
        with torch_threads(self.num_threads, self._device()):
            res = fit_survival_svm(
                X,
                ranks,
                event,
                self.alpha,
                max_iter=self.max_iter,
                tol=self.tol,
                device=self._device(),
            )
        if bool(res.failed[0]):
            raise ArithmeticError("survival SVM: singular or non-finite Newton system")
        if not bool(res.converged[0]):
            warnings.warn("Optimization did not converge", ConvergenceWarning, stacklevel=2)
        self.coef_ = res.coef[0].cpu().numpy()
        self.n_features_in_ = X.shape[1]
        return self

    @classmethod
    def from_coef(cls, coef, **params) -> TorchFastSurvivalSVM:
        est = cls(**params)
        est.coef_ = np.asarray(coef, dtype=np.float64)
        est.n_features_in_ = est.coef_.shape[0]
        return est

    def predict(self, X) -> np.ndarray:
        """Risk scores :math:`-x^\\top w` (higher = earlier event), as scikit-survival."""
        check_is_fitted(self, "coef_")
        X = check_array(X, dtype=np.float64)
        return -(X @ self.coef_)
