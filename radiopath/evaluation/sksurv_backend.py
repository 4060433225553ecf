"""The scikit-survival backend of the protocol: grid scores and the RSF depth trick.

:func:`_fit_sksurv` scores scikit-survival's estimators with ``GridSearchCV`` on the inner
splits of a :class:`~radiopath.evaluation.prepare.PreparedFold`, one grid point after the
other; :func:`_rsf_truncated` reads the RSF depth grid off one deep forest per inner fold
(:func:`forest_depth_risks`) instead of growing a forest per depth, with scikit-survival's
forest or the compiled :class:`~radiopath.evaluation.estimators.rsf.NumbaRandomSurvivalForest`.
Which point wins, the refit and its retries are :func:`~.selection.select_and_refit`'s.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.model_selection import GridSearchCV, ParameterGrid
from sksurv.ensemble import RandomSurvivalForest
from sksurv.exceptions import NoComparablePairException
from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis
from sksurv.svm import FastSurvivalSVM

from radiopath.errors import RadiopathInputError
from radiopath.evaluation import torch_metrics
from radiopath.evaluation.config import MODELS, CoxnetConfig, EvaluationConfig, RetryConfig
from radiopath.evaluation.estimators.rsf import NumbaRandomSurvivalForest
from radiopath.evaluation.fitting import FIT_ERRORS, FitFailed, FittedModel
from radiopath.evaluation.prepare import PreparedFold
from radiopath.evaluation.selection import Grid, Outcome, RetryPolicy, select_and_refit

log = logging.getLogger(__name__)

__all__ = ["fit_once", "fit_with_retry", "forest_depth_risks"]

# ----------------------------------------------------------------------------- RSF depth trick


def forest_depth_risks(
    forest: RandomSurvivalForest, X: np.ndarray, depths: Sequence[int | None]
) -> np.ndarray:
    """Risk scores of a fitted forest with every tree cut at each of ``depths``.

    A scikit-survival tree stores the Nelson-Aalen cumulative hazard of the (bootstrap)
    samples of *every* node, not only of its leaves, so a tree grown to depth D and read at
    depth d < D predicts what a tree grown with ``max_depth=d`` would (node splits depend
    only on the samples in the node). The risk is the forest's: the cumulative hazard summed
    over the training event times, averaged over trees. ``None`` means the full depth.

    Returns ``[len(depths), n_samples]``.
    """
    X32 = np.asarray(X, dtype=np.float32)
    n = X32.shape[0]
    rows = np.arange(n)
    limits = [np.inf if d is None else int(d) for d in depths]
    order = np.argsort(limits, kind="mergesort")
    out = np.zeros((len(depths), n))
    for est in forest.estimators_:
        tree = est.tree_
        node_risk = tree.value[:, est.is_event_time_, 0].sum(1)
        left, right = tree.children_left, tree.children_right
        feature, threshold = tree.feature, tree.threshold
        nodes = np.zeros(n, dtype=np.intp)
        depth = 0
        for k in order:
            while depth < limits[k]:
                leaf = left[nodes] == -1
                if leaf.all():
                    break
                go_left = X32[rows, np.where(leaf, 0, feature[nodes])] <= threshold[nodes]
                nodes = np.where(leaf, nodes, np.where(go_left, left[nodes], right[nodes]))
                depth += 1
            out[k] += node_risk[nodes]
    return out / len(forest.estimators_)


# ----------------------------------------------------------------------------- sksurv backend


class ReproducibleRandomSurvivalForest(RandomSurvivalForest):
    """scikit-survival's forest, with predictions that are the same bits on every run.

    The forest adds its trees' predictions from ``n_jobs`` threads in whatever order they
    finish, so two runs differ in the last bits (1e-15 seen on the benchmark's risks), and
    a resumed run could not be compared with an uninterrupted one file for file. Here
    every prediction runs on one thread (trees added in order); fitting stays parallel
    (each tree is grown from its own seeded generator, so the forest is the same).
    """

    def _one_thread(self, method, *args, **kwargs):
        n_jobs = self.n_jobs
        self.n_jobs = 1
        try:
            return method(*args, **kwargs)
        finally:
            self.n_jobs = n_jobs

    def predict(self, X):
        return self._one_thread(super().predict, X)

    def predict_survival_function(self, X, return_array=False):
        return self._one_thread(super().predict_survival_function, X, return_array)

    def predict_cumulative_hazard_function(self, X, return_array=False):
        return self._one_thread(super().predict_cumulative_hazard_function, X, return_array)


def _make_sksurv(model: str, cfg: EvaluationConfig, seed: int):
    if model == "rsf":
        return _make_rsf(cfg, seed, "sksurv")
    if model == "coxph":

        def make(**p):
            return CoxPHSurvivalAnalysis(
                n_iter=int(cfg.coxph.n_iter), tol=float(cfg.coxph.tol), **p
            )
    elif model == "coxnet":

        def make(**p):
            return CoxnetSurvivalAnalysis(
                tol=float(cfg.coxnet.tol),
                max_iter=int(cfg.coxnet.max_iter),
                fit_baseline_model=True,
                **p,
            )
    elif model == "fsvm":

        def make(**p):
            return FastSurvivalSVM(
                optimizer=cfg.fsvm.optimizer,
                max_iter=int(cfg.fsvm.max_iter),
                random_state=seed,
                **p,
            )
    else:
        raise RadiopathInputError(
            f"unknown model {model!r}; expected some of {MODELS}", field="models"
        )
    return make


def fit_once(make, params: Mapping, X, y) -> Outcome:
    """One attempt of ``make(**params).fit(X, y)``: the estimator, the error that a
    numerical failure raised, or the estimator flagged by its ``ConvergenceWarning``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est = make(**params).fit(X, y)
    except FIT_ERRORS as exc:
        return Outcome(failure=f"{type(exc).__name__}: {exc}")
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    if conv:
        return Outcome(est, converged=False, detail=str(conv[0].message))
    return Outcome(est)


def fit_with_retry(model: str, make, params: dict, X, y, retry: RetryConfig | Mapping):
    """Fit ``make(**params)`` under the retry policy of :mod:`.selection`.

    Returns ``(estimator, params, status, message)``; ``status`` is ``"ok"``,
    ``"retried"`` (a stronger penalty was needed) or ``"not_converged"`` (kept, flagged).
    Raises :class:`FitFailed` when every attempt failed.
    """
    end = RetryPolicy.from_config(retry, model).run(
        model, [params], lambda items, ps: [fit_once(make, p, X, y) for p in ps]
    )[0]
    if end.status == "failed":
        raise FitFailed(end.message)
    return end.value, end.params, end.status, end.message


def _refit_on(prep: PreparedFold, make):
    """The ``refit`` of :func:`~.selection.select_and_refit` for one fold, one fit at a time."""

    def refit(folds, params, choices):
        return [fit_once(make, p, prep.X_train, prep.y_train) for p in params]

    return refit


def _coxnet_alpha_path(prep: PreparedFold, c: CoxnetConfig, params: Mapping) -> Outcome:
    """The alpha path of the whole training split, as scikit-survival's user guide does."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = CoxnetSurvivalAnalysis(
                l1_ratio=float(params["l1_ratio"]),
                n_alphas=int(c.n_alphas),
                alpha_min_ratio=params["alpha_min_ratio"],
                tol=float(c.tol),
                max_iter=int(c.max_iter),
            ).fit(prep.X_train, prep.y_train)
    except FIT_ERRORS as exc:
        return Outcome(failure=f"alpha path: {type(exc).__name__}: {exc}")
    return Outcome(path.alphas_)


def _param_grid(model: str, prep: PreparedFold, cfg: EvaluationConfig, policy: RetryPolicy):
    """``(param_grid, notes)`` of ``GridSearchCV``; Coxnet's alpha paths are built under
    the retry policy (a ratio whose path cannot be built is left out)."""
    if model == "rsf":
        return {"max_depth": list(cfg.rsf.max_depth)}, []
    if model in ("coxph", "fsvm"):
        return {"alpha": [float(a) for a in getattr(cfg, model).alpha]}, []
    c = cfg.coxnet
    start = [{"l1_ratio": float(r), "alpha_min_ratio": c.alpha_min_ratio} for r in c.l1_ratio]
    ends = policy.run(
        "coxnet", start, lambda items, ps: [_coxnet_alpha_path(prep, c, p) for p in ps]
    )
    grids = [
        {"l1_ratio": [e.params["l1_ratio"]], "alphas": [[float(a)] for a in e.value]}
        for e in ends
        if e.status != "failed"
    ]
    return grids, [n for e in ends for n in e.notes]


def _sksurv_grid(model: str, prep: PreparedFold, cfg: EvaluationConfig, make, policy) -> Grid:
    """The grid of one fold scored by ``GridSearchCV`` on its inner splits (one point after
    the other; a failed fit scores NaN)."""
    param_grid, notes = _param_grid(model, prep, cfg, policy)
    if not param_grid:
        return Grid([], np.empty((0, 0)), notes, "; ".join(notes))
    candidates = list(ParameterGrid(param_grid))
    search = GridSearchCV(
        make(),
        param_grid,
        cv=prep.splits,
        error_score=np.nan,
        refit=False,
        n_jobs=int(cfg.n_jobs),
    )
    scores = np.full((len(prep.splits), len(candidates)), np.nan)
    with warnings.catch_warnings():
        for category in (FitFailedWarning, ConvergenceWarning, UserWarning, RuntimeWarning):
            warnings.simplefilter("ignore", category)
        try:
            search.fit(prep.X_train, prep.y_train)
            res = search.cv_results_
            scores = np.array([res[f"split{s}_test_score"] for s in range(len(prep.splits))])
        except ValueError as exc:
            # scikit-learn raises when every fit of the search failed
            log.info(
                "%s fold %d: every inner-CV fit failed (%s)",
                model,
                prep.fold,
                str(exc).strip()[:200],
            )
    return Grid(candidates, scores, notes)


def _fit_sksurv(model: str, prep: PreparedFold, cfg: EvaluationConfig, seed: int) -> FittedModel:
    make = _make_sksurv(model, cfg, seed)
    inner_make = make
    if model == "rsf":
        # one job per forest inside the search, the search itself is parallel
        def inner_make(**p):
            return make(**p).set_params(n_jobs=1)

    policy = RetryPolicy.from_config(cfg.retry, model)
    grid = _sksurv_grid(model, prep, cfg, inner_make, policy)
    return select_and_refit(model, [prep], [grid], _refit_on(prep, make), policy)[0]


# ----------------------------------------------------------------------------- RSF truncated


def _make_rsf(cfg: EvaluationConfig, seed: int, engine: str):
    """The forest factory of ``engine``: scikit-survival's or the compiled one (same
    parameters, same bootstrap samples)."""
    forests = {"sksurv": ReproducibleRandomSurvivalForest, "numba": NumbaRandomSurvivalForest}
    if engine not in forests:
        raise RadiopathInputError(
            f"unknown RSF engine {engine!r}; expected 'auto', 'sksurv' or 'numba'",
            field="evaluation.rsf.engine",
        )
    c = cfg.rsf

    def make(**p):
        return forests[engine](
            n_estimators=int(c.n_estimators),
            min_samples_split=int(c.min_samples_split),
            min_samples_leaf=int(c.min_samples_leaf),
            max_features=c.max_features,
            n_jobs=int(c.n_jobs),
            random_state=seed,
            **p,
        )

    return make


def _rsf_truncated(
    prep: PreparedFold, cfg: EvaluationConfig, seed: int, engine: str = "sksurv"
) -> FittedModel:
    """RSF with its depth grid read off one deep forest per inner fold, then a real refit.

    ``engine`` is ``"sksurv"`` (scikit-survival's forest) or ``"numba"``
    (:class:`~radiopath.evaluation.estimators.rsf.NumbaRandomSurvivalForest`, whose truncated
    trees are exactly the trees grown to the smaller depth).
    """
    make = _make_rsf(cfg, seed, engine)
    depths = list(cfg.rsf.max_depth)
    deepest = None if any(d is None for d in depths) else max(int(d) for d in depths)
    scores = np.full((len(prep.splits), len(depths)), np.nan)
    for s, (tr, va) in enumerate(prep.splits):
        try:
            forest = make(max_depth=deepest).fit(prep.X_train[tr], prep.y_train[tr])
        except FIT_ERRORS as exc:
            log.info("rsf fold %d inner split %d failed: %s", prep.fold, s, exc)
            continue
        if engine == "sksurv":
            risks = forest_depth_risks(forest, prep.X_train[va], depths)
        else:
            risks = forest.depth_risks(prep.X_train[va], depths)
        yv = prep.y_train[va]
        for k in range(len(depths)):
            try:
                scores[s, k] = torch_metrics.concordance_index_censored(
                    yv["event"], yv["time"], risks[k]
                )[0]
            except (ValueError, NoComparablePairException):
                pass
    grid = Grid([{"max_depth": d} for d in depths], scores)
    policy = RetryPolicy.from_config(cfg.retry, "rsf")
    return select_and_refit("rsf", [prep], [grid], _refit_on(prep, make), policy)[0]
