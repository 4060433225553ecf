"""The scikit-survival backend of the protocol: grid searches and the RSF depth trick.

:func:`_fit_sksurv` runs scikit-survival's estimators in ``GridSearchCV`` over the inner
splits of a :class:`~radiopath.evaluation.prepare.PreparedFold` and refits the chosen
parameters with :func:`~radiopath.evaluation.fitting.fit_with_retry`. :func:`_rsf_truncated`
reads the RSF depth grid off one deep forest per inner fold (:func:`forest_depth_risks`)
instead of growing a forest per depth, with scikit-survival's forest or the compiled
:class:`~radiopath.evaluation.estimators.rsf.NumbaRandomSurvivalForest`.
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
from radiopath.evaluation.config import MODELS
from radiopath.evaluation.estimators.rsf import NumbaRandomSurvivalForest
from radiopath.evaluation.fitting import (
    FIT_ERRORS,
    FitFailed,
    FittedModel,
    _failed,
    _finish,
    _select,
    fit_with_retry,
)
from radiopath.evaluation.prepare import PreparedFold

log = logging.getLogger(__name__)

__all__ = ["forest_depth_risks"]

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


def _make_sksurv(model: str, cfg: Mapping, seed: int):
    if model == "rsf":
        return _make_rsf(cfg, seed, "sksurv")
    if model == "coxph":

        def make(**p):
            return CoxPHSurvivalAnalysis(
                n_iter=int(cfg["coxph"]["n_iter"]), tol=float(cfg["coxph"]["tol"]), **p
            )
    elif model == "coxnet":

        def make(**p):
            return CoxnetSurvivalAnalysis(
                tol=float(cfg["coxnet"]["tol"]),
                max_iter=int(cfg["coxnet"]["max_iter"]),
                fit_baseline_model=True,
                **p,
            )
    elif model == "fsvm":

        def make(**p):
            return FastSurvivalSVM(
                optimizer=cfg["fsvm"]["optimizer"],
                max_iter=int(cfg["fsvm"]["max_iter"]),
                random_state=seed,
                **p,
            )
    else:
        raise RadiopathInputError(
            f"unknown model {model!r}; expected some of {MODELS}", field="models"
        )
    return make


def _sksurv_grid(model: str, prep: PreparedFold, cfg: Mapping, make) -> list[dict] | dict:
    if model == "rsf":
        return {"max_depth": list(cfg["rsf"]["max_depth"])}
    if model == "coxph":
        return {"alpha": [float(a) for a in cfg["coxph"]["alpha"]]}
    if model == "fsvm":
        return {"alpha": [float(a) for a in cfg["fsvm"]["alpha"]]}
    grids = []
    for r in cfg["coxnet"]["l1_ratio"]:
        # the alpha path of the whole training split, as scikit-survival's user guide does
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = CoxnetSurvivalAnalysis(
                l1_ratio=float(r),
                n_alphas=int(cfg["coxnet"]["n_alphas"]),
                alpha_min_ratio=cfg["coxnet"]["alpha_min_ratio"],
                tol=float(cfg["coxnet"]["tol"]),
                max_iter=int(cfg["coxnet"]["max_iter"]),
            ).fit(prep.X_train, prep.y_train)
        grids.append({"l1_ratio": [float(r)], "alphas": [[float(a)] for a in path.alphas_]})
    return grids


def _fit_sksurv(model: str, prep: PreparedFold, cfg: Mapping, seed: int) -> FittedModel:
    make = _make_sksurv(model, cfg, seed)
    inner_make = make
    if model == "rsf":
        # one job per forest inside the search, the search itself is parallel
        def inner_make(**p):
            return make(**p).set_params(n_jobs=1)

    try:
        grid = _sksurv_grid(model, prep, cfg, make)
    except FIT_ERRORS as exc:
        return _failed(model, prep, {}, float("nan"), f"alpha path: {type(exc).__name__}: {exc}")
    search = GridSearchCV(
        inner_make(),
        grid,
        cv=prep.splits,
        error_score=np.nan,
        refit=False,
        n_jobs=int(cfg["n_jobs"]),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            search.fit(prep.X_train, prep.y_train)
            scores = np.asarray(search.cv_results_["mean_test_score"], dtype=float)
        except ValueError as exc:
            # scikit-learn raises when every fit of the search failed
            log.info(
                "%s fold %d: every inner-CV fit failed (%s)",
                model,
                prep.fold,
                str(exc).strip()[:200],
            )
            scores = None
    candidates = list(ParameterGrid(grid))
    if scores is None:
        scores = np.full(len(candidates), np.nan)
    best, cv_score = _select(scores)
    if best < 0:
        # every grid point failed inside the CV: start from the most penalised one
        best = _most_penalised(model, candidates)
    params = dict(candidates[best])
    try:
        est, params, status, message = fit_with_retry(
            model, make, params, prep.X_train, prep.y_train, cfg["retry"]
        )
    except FitFailed as exc:
        return _failed(model, prep, params, cv_score, str(exc))
    return _finish(model, prep, est, _clean(params), cv_score, status, message)


def _most_penalised(model: str, candidates: list[dict]) -> int:
    if model == "coxph":
        return int(np.argmax([c["alpha"] for c in candidates]))
    if model == "coxnet":
        return int(np.argmax([c["alphas"][0] for c in candidates]))
    if model == "fsvm":
        return int(np.argmin([c["alpha"] for c in candidates]))
    return 0


def _clean(params: Mapping) -> dict:
    out = {}
    for k, v in params.items():
        if k == "alphas":
            out["alpha"] = float(v[0])
        elif isinstance(v, np.generic):
            out[k] = v.item()
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- RSF truncated


def _make_rsf(cfg: Mapping, seed: int, engine: str):
    """The forest factory of ``engine``: scikit-survival's or the compiled one (same
    parameters, same bootstrap samples)."""
    forests = {"sksurv": ReproducibleRandomSurvivalForest, "numba": NumbaRandomSurvivalForest}
    if engine not in forests:
        raise RadiopathInputError(
            f"unknown RSF engine {engine!r}; expected 'auto', 'sksurv' or 'numba'",
            field="evaluation.rsf.engine",
        )
    c = cfg["rsf"]

    def make(**p):
        return forests[engine](
            n_estimators=int(c["n_estimators"]),
            min_samples_split=int(c["min_samples_split"]),
            min_samples_leaf=int(c["min_samples_leaf"]),
            max_features=c["max_features"],
            n_jobs=int(c["n_jobs"]),
            random_state=seed,
            **p,
        )

    return make


def _rsf_truncated(
    prep: PreparedFold, cfg: Mapping, seed: int, engine: str = "sksurv"
) -> FittedModel:
    """RSF with its depth grid read off one deep forest per inner fold, then a real refit.

    ``engine`` is ``"sksurv"`` (scikit-survival's forest) or ``"numba"``
    (:class:`~radiopath.evaluation.estimators.rsf.NumbaRandomSurvivalForest`, whose truncated
    trees are exactly the trees grown to the smaller depth).
    """
    make = _make_rsf(cfg, seed, engine)
    depths = list(cfg["rsf"]["max_depth"])
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(scores, 0)
    best, cv_score = _select(mean)
    params = {"max_depth": depths[max(best, 0)]}
    try:
        est, params, status, message = fit_with_retry(
            "rsf", make, params, prep.X_train, prep.y_train, cfg["retry"]
        )
    except FitFailed as exc:
        return _failed("rsf", prep, params, cv_score, str(exc))
    return _finish("rsf", prep, est, params, cv_score, status, message)
