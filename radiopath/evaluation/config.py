"""Defaults of the downstream evaluation protocol (every grid can be overridden in the config).

The grids follow the paper's protocol (Gao et al., MICCAI 2025, Sec. 3.1) -- RSF max depth,
CoxPH ridge penalty, Coxnet l1 ratio and alpha path, FSVM regularisation, each chosen by
inner 5-fold cross-validation on the outer training split -- with ranges that suit
standardised embeddings of a few hundred dimensions and ~150 patients.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

from radiopath.config import check_known_keys, config_section, deep_merge
from radiopath.config_rules import Either, Flag, ListOf, Number, OneOf, Text, check_rules
from radiopath.errors import RadiopathInputError

MODELS: tuple[str, ...] = ("rsf", "coxph", "coxnet", "fsvm")
"""The four downstream models, in the paper's order."""

SURVIVAL_FUNCTION_MODELS: frozenset[str] = frozenset({"rsf", "coxph", "coxnet"})
"""Models with a survival function (IBS is defined for them only)."""

METRICS: tuple[str, ...] = ("c_index", "c_ipcw", "c_auc", "ibs")
"""The paper's four metrics; ``ibs`` is lower-is-better."""

EXTRA_METRICS: tuple[str, ...] = ("c_index_random_ties",)
"""Reported as well, but not one of the 19 studies."""

LOWER_IS_BETTER: frozenset[str] = frozenset({"ibs"})

AGGREGATOR_ORDER: tuple[str, ...] = ("raw_mean", "mean", "abmil_mil", "abmil", "sparra")
"""How tables order aggregators (others follow by name); a paired comparison is ``later -
earlier`` in this order, e.g. ``sparra - mean``."""


def lower_is_better(metric: str) -> bool:
    """IBS and the Brier score at a horizon (``brier@<t>``)."""
    return metric in LOWER_IS_BETTER or metric.startswith("brier@")


def ordered_aggregators(names) -> list[str]:
    """``names`` without repeats, in :data:`AGGREGATOR_ORDER`, then the others sorted."""
    names = list(dict.fromkeys(str(n) for n in names))
    known = [a for a in AGGREGATOR_ORDER if a in names]
    return known + sorted(a for a in names if a not in AGGREGATOR_ORDER)


BACKENDS: tuple[str, ...] = ("sksurv", "torch")

DEFAULT_CONFIG: dict = {
    "screening": {
        # univariate Cox screening, p < threshold kept; the paper skips it for SPARRA
        "enabled": True,
        "p_threshold": 0.2,
        "min_features": 1,
        "skip_aggregators": ["sparra"],
    },
    "cv": {"n_splits": 5},
    "rsf": {
        "max_depth": [2, 4, 6, 8],
        "n_estimators": 100,
        "min_samples_split": 6,
        "min_samples_leaf": 3,
        "max_features": "sqrt",
        "n_jobs": 2,
        # "grid": GridSearchCV refits a forest per depth; "truncate": one deep forest per
        # inner fold read at every depth; "auto": grid with backend sksurv, truncate with torch
        "cv_strategy": "auto",
        # "sksurv": scikit-survival's forest; "numba": the compiled forest of the same
        # estimators and split rule (estimators/rsf.py; several times faster, equal in
        # distribution); "auto": sksurv with backend sksurv, numba with torch
        "engine": "auto",
    },
    "coxph": {"alpha": [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0], "n_iter": 100, "tol": 1e-9},
    "coxnet": {
        "l1_ratio": [0.1, 0.5, 0.9],
        "n_alphas": 20,
        "alpha_min_ratio": 0.01,
        "tol": 1e-7,
        "max_iter": 100000,
        # torch backend: KKT residual (infinity norm) at which an alpha of the path counts as
        # solved -- tight for the final models, looser for the inner-CV paths, which only rank
        # alphas by validation C-index
        "torch_tol": 1e-6,
        "torch_cv_tol": 1e-3,
        "torch_max_iter": 5000,
    },
    "fsvm": {
        "alpha": [2.0**k for k in range(-16, 1, 2)],
        "max_iter": 20,
        "optimizer": "avltree",
        "torch_tol": 1e-8,
        "torch_max_iter": 100,
    },
    "retry": {"max_retries": 3, "factor": 10.0},
    "metrics": {
        "time_percentiles": [10.0, 80.0],
        "n_times": 15,
        "random_tie_draws": 100,
        "tied_tol": 1e-8,
        # fixed horizons (in the cohort's time unit, e.g. [1826] for 5 years in days): the
        # survival functions are also kept at these times (survival.csv), and the report
        # gives the time-dependent AUC and Brier score at each with its bootstrap interval
        "horizons": [],
    },
    # parallel jobs of GridSearchCV (sksurv backend)
    "n_jobs": 1,
    # intra-op threads of the torch backend on CPU (None: torch's default). The problems are
    # small and batched; extra threads mostly spin, and hurt badly when cores are shared.
    "num_threads": 1,
}


_POSITIVE = Number(low=0, low_open=True)
_COUNT = Number(low=1, integer=True)
_JOBS = Either((Number(low=1, integer=True), OneOf((-1, None))))

# What each key may hold (radiopath.config_rules); grids are non-empty lists.
EVALUATION_RULES: dict = {
    "screening.enabled": Flag(),
    "screening.p_threshold": Number(low=0, high=1, low_open=True),
    "screening.min_features": Number(low=0, integer=True),
    "screening.skip_aggregators": ListOf(Text(), allow_empty=True),
    "cv.n_splits": Number(low=2, integer=True),
    "rsf.max_depth": ListOf(_COUNT),
    "rsf.n_estimators": _COUNT,
    "rsf.min_samples_split": Number(low=2, integer=True),
    "rsf.min_samples_leaf": _COUNT,
    "rsf.max_features": Either(
        (OneOf(("sqrt", "log2", None)), _COUNT, Number(low=0, high=1, low_open=True))
    ),
    "rsf.n_jobs": _JOBS,
    "rsf.cv_strategy": OneOf(("auto", "grid", "truncate")),
    "rsf.engine": OneOf(("auto", "sksurv", "numba")),
    "coxph.alpha": ListOf(Number(low=0)),
    "coxph.n_iter": _COUNT,
    "coxph.tol": _POSITIVE,
    "coxnet.l1_ratio": ListOf(Number(low=0, high=1, low_open=True)),
    "coxnet.n_alphas": _COUNT,
    "coxnet.alpha_min_ratio": Number(low=0, high=1, low_open=True, high_open=True),
    "coxnet.tol": _POSITIVE,
    "coxnet.max_iter": _COUNT,
    "coxnet.torch_tol": _POSITIVE,
    "coxnet.torch_cv_tol": _POSITIVE,
    "coxnet.torch_max_iter": _COUNT,
    "fsvm.alpha": ListOf(_POSITIVE),
    "fsvm.max_iter": _COUNT,
    "fsvm.optimizer": OneOf(("avltree", "rbtree", "direct-count", "PRSVM", "simple")),
    "fsvm.torch_tol": _POSITIVE,
    "fsvm.torch_max_iter": _COUNT,
    "retry.max_retries": Number(low=0, integer=True),
    "retry.factor": Number(low=1, low_open=True),
    "metrics.time_percentiles": ListOf(Number(low=0, high=100, low_open=True, high_open=True), 2),
    "metrics.n_times": Number(low=2, integer=True),
    "metrics.random_tie_draws": _COUNT,
    "metrics.tied_tol": Number(low=0),
    "n_jobs": _JOBS,
    "num_threads": Number(low=1, integer=True, optional=True),
}


def resolve_evaluation_config(config: Mapping | None = None) -> dict:
    """Defaults <- ``config`` (or its ``"evaluation"`` section). An unknown key at any depth
    is an error naming it (``evaluation.coxph.alphas``)."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if not config:
        return cfg
    section = config.get("evaluation", config) if isinstance(config, Mapping) else None
    if not isinstance(section, Mapping):
        raise RadiopathInputError(
            "the evaluation configuration must be a mapping", field="evaluation"
        )
    # every section's keys, each model's grid included (evaluation.coxph.alpha, ...)
    check_known_keys(section, DEFAULT_CONFIG, "evaluation")
    with config_section("evaluation"):
        check_rules(section, EVALUATION_RULES)
    cfg = deep_merge(cfg, section)
    cfg["metrics"]["horizons"] = check_horizons(cfg["metrics"].get("horizons"))
    return cfg


def check_horizons(horizons) -> list[float]:
    """``metrics.horizons``: a list of positive finite times (sorted, without repeats)."""
    field = "evaluation.metrics.horizons"
    if horizons is None:
        return []
    if isinstance(horizons, (int, float)) and not isinstance(horizons, bool):
        horizons = [horizons]
    if not isinstance(horizons, (list, tuple)):
        raise RadiopathInputError(f"must be a list of times, got {horizons!r}", field=field)
    out = []
    for h in horizons:
        try:
            value = float(h)
        except (TypeError, ValueError):
            value = float("nan")
        if isinstance(h, bool) or not math.isfinite(value) or value <= 0:
            raise RadiopathInputError(f"a horizon must be a positive time, got {h!r}", field=field)
        out.append(value)
    return sorted(set(out))


def screening_enabled(cfg: Mapping, aggregator: str) -> bool:
    """Whether univariate screening runs for ``aggregator`` (off for those in ``skip_aggregators``)."""
    scr = cfg["screening"]
    skip = {str(a).lower() for a in scr.get("skip_aggregators", [])}
    return bool(scr.get("enabled", True)) and aggregator.lower() not in skip
