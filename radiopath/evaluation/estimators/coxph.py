"""Ridge Cox proportional hazards (``CoxPHSurvivalAnalysis``) on the batched torch solver."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sksurv.linear_model.coxph import BreslowEstimator

from radiopath.evaluation._cox import torch_threads
from radiopath.evaluation.estimators.base import _check_xy, _TorchEstimator
from radiopath.evaluation.torch_cox import fit_cox_ridge


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
