"""The fast survival SVM's ranking objective (``FastSurvivalSVM``) on the batched torch solver."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array, check_is_fitted

from radiopath.evaluation._cox import torch_threads
from radiopath.evaluation.estimators.base import _check_xy, _TorchEstimator
from radiopath.evaluation.torch_svm import fit_survival_svm, survival_ranks


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
