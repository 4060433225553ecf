"""Test-split metrics of one fitted model: Harrell's C, C-IPCW, C-AUC, IBS, random ties.

Computed with scikit-survival (``"sksurv"`` backend) or :mod:`.torch_metrics` (``"torch"``);
a metric that cannot be computed is reported as ``NaN`` with status ``"failed"`` and why.
"""

from __future__ import annotations

import math

import numpy as np
from sksurv.exceptions import NoComparablePairException

from radiopath.evaluation import torch_metrics
from radiopath.evaluation.config import SURVIVAL_FUNCTION_MODELS, EvaluationConfig
from radiopath.evaluation.fitting import FittedModel
from radiopath.evaluation.prepare import PreparedFold

__all__ = ["c_index_random_ties"]

# ----------------------------------------------------------------------------- metrics


def _metric_values(
    prep: PreparedFold, fm: FittedModel, backend: str, cfg: EvaluationConfig, device, seed: int
):
    """Yield ``(metric, value, status, message)`` for one fitted model on its test split."""
    names = ["c_index", "c_ipcw", "c_auc"]
    if fm.model in SURVIVAL_FUNCTION_MODELS:
        names.append("ibs")
    names.append("c_index_random_ties")
    problem = (
        prep.train_problem or (fm.message if fm.status == "failed" else None) or prep.test_problem
    )
    if problem is not None:
        for name in names:
            yield name, float("nan"), "failed", problem
        return
    if backend == "torch":
        M, kw = torch_metrics, {"device": device}
    else:
        import sksurv.metrics as M

        kw = {}
    tol = float(cfg.metrics.tied_tol)
    yt, ye = prep.y_test, prep.y_test_eval
    risk = fm.test_risk
    note = fm.message if fm.status != "ok" else ""
    status = fm.status if fm.status in ("retried", "not_converged") else "ok"

    def attempt(name, fn):
        try:
            value = float(fn())
            if not math.isfinite(value):
                return name, float("nan"), "failed", f"{name} is not finite"
            return name, value, status, note
        except (ValueError, NoComparablePairException, ZeroDivisionError) as exc:
            return name, float("nan"), "failed", f"{type(exc).__name__}: {exc}"

    yield attempt(
        "c_index",
        lambda: M.concordance_index_censored(yt["event"], yt["time"], risk, tied_tol=tol, **kw)[0],
    )
    yield attempt(
        "c_ipcw",
        lambda: M.concordance_index_ipcw(prep.y_train, yt, risk, tau=prep.tau, tied_tol=tol, **kw)[
            0
        ],
    )
    if prep.times is None:
        yield "c_auc", float("nan"), "failed", prep.grid_problem
    else:
        yield attempt(
            "c_auc",
            lambda: M.cumulative_dynamic_auc(
                prep.y_train, ye, risk, prep.times, tied_tol=tol, **kw
            )[1],
        )
    if "ibs" in names:
        if prep.times is None or len(prep.times) < 2:
            why = (
                prep.grid_problem
                or "fewer than two evaluation times inside the follow-up: IBS is undefined"
            )
            yield "ibs", float("nan"), "failed", why
        else:
            yield attempt(
                "ibs",
                lambda: M.integrated_brier_score(
                    prep.y_train, ye, fm.test_survival, prep.times, **kw
                ),
            )
    yield attempt(
        "c_index_random_ties",
        lambda: c_index_random_ties(
            yt["event"],
            yt["time"],
            risk,
            int(cfg.metrics.random_tie_draws),
            seed=seed + prep.fold,
            tied_tol=tol,
        ),
    )


def c_index_random_ties(
    event, time, risk, n_draws: int = 100, *, seed: int = 0, tied_tol: float = 1e-8
) -> float:
    """Harrell's C with tied risk scores ordered at random, averaged over ``n_draws`` draws.

    For discrete scores (a clinical stage, a rounded model output) the convention of
    counting a tied pair as 1/2 flatters or penalises a score depending on the
    implementation; breaking ties at random (Boeke et al. 2025) treats every score alike.
    Risks within ``tied_tol`` form one tie group; within it the order is a random
    permutation per draw. The expectation equals Harrell's C with ties counted 1/2.
    """
    draws = c_index_random_tie_draws(event, time, risk, n_draws, seed=seed, tied_tol=tied_tol)
    return float(draws.mean())


def c_index_random_tie_draws(
    event, time, risk, n_draws: int = 100, *, seed: int = 0, tied_tol: float = 1e-8
) -> np.ndarray:
    """The ``[n_draws]`` C-indices of :func:`c_index_random_ties`, one per random order of
    the tied risks (their spread says how much the ties alone move the C-index)."""
    rng = np.random.default_rng(seed)
    risk = np.asarray(risk, dtype=np.float64)
    order = np.argsort(risk, kind="mergesort")
    sorted_risk = risk[order]
    group = np.concatenate([[0], np.cumsum(np.diff(sorted_risk) > tied_tol)])
    rank_of_group = np.empty_like(risk)
    rank_of_group[order] = group
    draws = np.empty((n_draws, risk.size))
    for k in range(n_draws):
        draws[k] = rank_of_group + rng.random(risk.size) * 0.5
    c = torch_metrics.concordance_index_censored(
        np.asarray(event, bool), time, draws, tied_tol=0.0
    )[0]
    return np.asarray(c, dtype=np.float64)
