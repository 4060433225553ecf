"""Defaults of the downstream evaluation protocol (every grid can be overridden in the config).

The grids follow the paper's protocol (Gao et al., MICCAI 2025, Sec. 3.1) -- RSF max depth,
CoxPH ridge penalty, Coxnet l1 ratio and alpha path, FSVM regularisation, each chosen by
inner 5-fold cross-validation on the outer training split -- with ranges that suit
standardised embeddings of a few hundred dimensions and ~150 patients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from radiopath.config_rules import Either, Flag, ListOf, Number, OneOf, Text
from radiopath.errors import RadiopathInputError
from radiopath.typed_config import TypedConfig, generated_page, section, setting

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


_POSITIVE = Number(low=0, low_open=True)
_COUNT = Number(low=1, integer=True)
_JOBS = Either((Number(low=1, integer=True), OneOf((-1, None))))


@dataclass(frozen=True)
class ScreeningConfig(TypedConfig):
    """Univariate Cox screening on each outer training split (the paper skips it for SPARRA)."""

    enabled: bool = setting(True, Flag(), "Screen the embedding dimensions at all.")
    p_threshold: float = setting(
        0.2, Number(low=0, high=1, low_open=True), "Dimensions with Wald p < this are kept."
    )
    min_features: int = setting(
        1, Number(low=0, integer=True), "Keep at least this many (the smallest p) if fewer pass."
    )
    skip_aggregators: tuple = setting(
        ["sparra"], ListOf(Text(), allow_empty=True), "Aggregators evaluated without screening."
    )


@dataclass(frozen=True)
class CVConfig(TypedConfig):
    """The inner cross-validation that chooses each model's hyper-parameters."""

    n_splits: int = setting(
        5, Number(low=2, integer=True), "Inner folds (stratified on the event)."
    )


@dataclass(frozen=True)
class RSFConfig(TypedConfig):
    """Random survival forest: the depth grid and the forest's settings."""

    max_depth: tuple = setting([2, 4, 6, 8], ListOf(_COUNT), "Grid of maximum tree depths.")
    n_estimators: int = setting(100, _COUNT, "Trees per forest.")
    min_samples_split: int = setting(
        6, Number(low=2, integer=True), "Fewest patients a node needs to be split."
    )
    min_samples_leaf: int = setting(3, _COUNT, "Fewest patients in a leaf.")
    max_features: object = setting(
        "sqrt",
        Either((OneOf(("sqrt", "log2", None)), _COUNT, Number(low=0, high=1, low_open=True))),
        "Features tried per split: a rule, a count or a fraction.",
    )
    n_jobs: object = setting(2, _JOBS, "Parallel jobs of each forest.")
    cv_strategy: str = setting(
        "auto",
        OneOf(("auto", "grid", "truncate")),
        "grid: a forest per depth; truncate: one deep forest per inner fold read at every "
        "depth; auto: grid with backend sksurv, truncate with torch.",
    )
    engine: str = setting(
        "auto",
        OneOf(("auto", "sksurv", "numba")),
        "sksurv: scikit-survival's forest; numba: the compiled forest of the same estimators "
        "and split rule (faster, equal in distribution); auto: sksurv with backend sksurv, "
        "numba with torch.",
    )


@dataclass(frozen=True)
class CoxPHConfig(TypedConfig):
    """Cox proportional hazards with a ridge penalty."""

    alpha: tuple = setting(
        [0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0], ListOf(Number(low=0)), "Grid of ridge penalties."
    )
    n_iter: int = setting(100, _COUNT, "Newton iterations at most.")
    tol: float = setting(1e-9, _POSITIVE, "Convergence tolerance.")


@dataclass(frozen=True)
class CoxnetConfig(TypedConfig):
    """Elastic-net Cox model: an alpha path per l1 ratio."""

    l1_ratio: tuple = setting(
        [0.1, 0.5, 0.9], ListOf(Number(low=0, high=1, low_open=True)), "Grid of l1 ratios."
    )
    n_alphas: int = setting(20, _COUNT, "Penalties on each alpha path.")
    alpha_min_ratio: float = setting(
        0.01,
        Number(low=0, high=1, low_open=True, high_open=True),
        "Smallest alpha of the path as a fraction of the largest.",
    )
    tol: float = setting(1e-7, _POSITIVE, "Convergence tolerance (sksurv backend).")
    max_iter: int = setting(100000, _COUNT, "Coordinate-descent iterations at most (sksurv).")
    torch_tol: float = setting(
        1e-6, _POSITIVE, "Torch backend: KKT residual at which a final model counts as solved."
    )
    torch_cv_tol: float = setting(
        1e-3, _POSITIVE, "Torch backend: the same for the inner-CV paths (they only rank alphas)."
    )
    torch_max_iter: int = setting(5000, _COUNT, "Torch backend: iterations at most.")


@dataclass(frozen=True)
class FSVMConfig(TypedConfig):
    """Fast survival SVM (ranking objective)."""

    alpha: tuple = setting(
        [2.0**k for k in range(-16, 1, 2)], ListOf(_POSITIVE), "Grid of regularisation weights."
    )
    max_iter: int = setting(20, _COUNT, "Optimiser iterations at most (sksurv backend).")
    optimizer: str = setting(
        "avltree",
        OneOf(("avltree", "rbtree", "direct-count", "PRSVM", "simple")),
        "scikit-survival's optimiser.",
    )
    torch_tol: float = setting(1e-8, _POSITIVE, "Torch backend: convergence tolerance.")
    torch_max_iter: int = setting(100, _COUNT, "Torch backend: iterations at most.")


@dataclass(frozen=True)
class RetryConfig(TypedConfig):
    """A failed or unconverged fit is retried with a stronger penalty (not RSF)."""

    max_retries: int = setting(3, Number(low=0, integer=True), "Retries at most.")
    factor: float = setting(10.0, Number(low=1, low_open=True), "Penalty factor per retry.")


@dataclass(frozen=True)
class MetricsConfig(TypedConfig):
    """The test metrics: time grid, tie handling, fixed horizons."""

    time_percentiles: tuple = setting(
        [10.0, 80.0],
        ListOf(Number(low=0, high=100, low_open=True, high_open=True), 2),
        "Percentiles of the test event times spanning the AUC / IBS time grid.",
    )
    n_times: int = setting(15, Number(low=2, integer=True), "Points of the time grid.")
    random_tie_draws: int = setting(100, _COUNT, "Draws of the C-index with random tie breaks.")
    tied_tol: float = setting(1e-8, Number(low=0), "Risks closer than this count as tied.")
    horizons: tuple = setting(
        [],
        doc="Fixed times (the cohort's unit, e.g. [1826] days) at which survival functions are "
        "kept and the time-dependent AUC and Brier score reported.",
        convert=check_horizons,
        allowed="a positive time or a list of them (sorted, repeats dropped)",
    )


@dataclass(frozen=True)
class EvaluationConfig(TypedConfig):
    """The downstream evaluation protocol: screening, inner CV, the four models' grids, metrics."""

    screening: ScreeningConfig = section(ScreeningConfig, ScreeningConfig.__doc__)
    cv: CVConfig = section(CVConfig, CVConfig.__doc__)
    rsf: RSFConfig = section(RSFConfig, RSFConfig.__doc__)
    coxph: CoxPHConfig = section(CoxPHConfig, CoxPHConfig.__doc__)
    coxnet: CoxnetConfig = section(CoxnetConfig, CoxnetConfig.__doc__)
    fsvm: FSVMConfig = section(FSVMConfig, FSVMConfig.__doc__)
    retry: RetryConfig = section(RetryConfig, RetryConfig.__doc__)
    metrics: MetricsConfig = section(MetricsConfig, MetricsConfig.__doc__)
    n_jobs: object = setting(1, _JOBS, "Parallel jobs of GridSearchCV (sksurv backend).")
    num_threads: int | None = setting(
        1,
        Number(low=1, integer=True, optional=True),
        "Intra-op threads of the torch backend on CPU (null: torch's default; the problems "
        "are small and extra threads mostly spin).",
    )


DEFAULT_CONFIG: dict = EvaluationConfig().to_dict()
"""The defaults as a plain nested dict (read-only use: benchmark defaults, tests)."""


def resolve_evaluation_config(config: Mapping | EvaluationConfig | None = None) -> EvaluationConfig:
    """Defaults <- ``config`` (or its ``"evaluation"`` section); a built
    :class:`EvaluationConfig` is returned as it is. An explicit null sets a key to None
    where its rule allows one (``num_threads: null``: torch's default). An unknown key or a
    wrong value at any depth is an error naming it (``evaluation.coxph.alphas``)."""
    if isinstance(config, EvaluationConfig):
        return config
    if not config:
        return EvaluationConfig()
    part = config.get("evaluation", config) if isinstance(config, Mapping) else None
    if not isinstance(part, Mapping):
        raise RadiopathInputError(
            "the evaluation configuration must be a mapping", field="evaluation"
        )
    return EvaluationConfig.from_mapping(part, "evaluation", null_sets=True)


def screening_enabled(cfg: EvaluationConfig, aggregator: str) -> bool:
    """Whether univariate screening runs for ``aggregator`` (off for those in ``skip_aggregators``)."""
    skip = {str(a).lower() for a in cfg.screening.skip_aggregators}
    return bool(cfg.screening.enabled) and aggregator.lower() not in skip


def reference_page() -> str:
    """``docs/config-evaluation.md``: every key of :class:`EvaluationConfig`, generated from
    its declarations (``tests/evaluation/test_evaluation_config.py`` keeps the page equal)."""
    return generated_page(
        EvaluationConfig,
        "evaluation",
        title="Evaluation configuration",
        page="docs/config-evaluation.md",
        intro=(
            "The `evaluation` section of a configuration file (or the whole of `radiopath "
            "evaluate --config`). Every key is optional; a wrong key or value is refused by "
            "its dotted name before any work starts. Grids are lists, one hyper-parameter "
            "chosen from each by inner cross-validation."
        ),
    )
