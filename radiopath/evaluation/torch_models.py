"""Torch versions of scikit-survival's linear survival models, batched over many problems.

Three estimators with scikit-survival's ``fit`` / ``predict`` API, so they drop into a
``Pipeline`` or ``GridSearchCV``:

* :class:`TorchCoxPH` -- ``CoxPHSurvivalAnalysis`` (ridge penalty, Breslow ties),
* :class:`TorchCoxnet` -- ``CoxnetSurvivalAnalysis`` (elastic net along the alpha path),
* :class:`TorchFastSurvivalSVM` -- ``FastSurvivalSVM`` with the ranking objective
  (``rank_ratio=1``, ``fit_intercept=False``).

Each is a thin wrapper around a batched solver (:func:`fit_cox_ridge`, :func:`fit_coxnet_path`,
:func:`fit_survival_svm`) that solves B problems at once -- inner cross-validation folds x
grid points x outer folds -- on CPU or CUDA. The solvers minimise exactly scikit-survival's
objectives, so the solutions agree to solver tolerance (tests check 1e-4 relative).

A solver that overflows or meets a singular system marks that problem as failed (the
estimators raise :class:`ArithmeticError`, as scikit-survival's coxnet does for "weights too
large") rather than returning garbage.

The solvers live in :mod:`.torch_cox` (ridge and elastic-net Cox) and :mod:`.torch_svm`
(survival SVM), the estimators in :mod:`.estimators` (one file per model); this module re-exports them.
"""

from __future__ import annotations

from radiopath.evaluation.estimators import TorchCoxnet, TorchCoxPH, TorchFastSurvivalSVM
from radiopath.evaluation.torch_cox import CoxFit, CoxnetPath, fit_cox_ridge, fit_coxnet_path
from radiopath.evaluation.torch_svm import SurvivalSVMFit, fit_survival_svm, survival_ranks

__all__ = [
    "CoxFit",
    "CoxnetPath",
    "SurvivalSVMFit",
    "TorchCoxPH",
    "TorchCoxnet",
    "TorchFastSurvivalSVM",
    "fit_cox_ridge",
    "fit_coxnet_path",
    "fit_survival_svm",
    "survival_ranks",
]
