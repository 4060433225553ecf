"""The benchmark's configuration: its defaults, the keys it takes, and the checks that refuse a
bad one before any work starts (:func:`validate_benchmark_config`).

:func:`radiopath.benchmark.run_benchmark` reads its configuration through this module, and
:mod:`radiopath.sweep` validates each point of a sweep with it; the names are re-exported by
:mod:`radiopath.benchmark`.
"""

from __future__ import annotations

import copy
import os

from radiopath.clinical.stage import (
    CLINICAL_DEFAULTS,
    ENDPOINT_DEFAULTS,
    resolve_clinical_config,
    resolve_endpoint_config,
)
from radiopath.config import check_known_keys, config_section, load_config_file
from radiopath.config_rules import Either, Number, OneOf, Text, check_rules
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import BACKENDS as KNOWN_BACKENDS
from radiopath.evaluation.config import DEFAULT_CONFIG as EVALUATION_DEFAULTS
from radiopath.evaluation.config import MODELS as KNOWN_MODELS
from radiopath.evaluation.config import resolve_evaluation_config
from radiopath.evaluation.stats import DEFAULT_STATISTICS, resolve_statistics_config
from radiopath.executors import check_executor_available, resolve_executor_config
from radiopath.io import Cohort
from radiopath.training.baselines import BASELINES

DEFAULTS: dict = {
    "seed": 0,
    "folds": 5,
    "repeats": 1,
    "aggregators": ["sparra", "abmil", "mean"],
    "models": list(KNOWN_MODELS),
    "modalities": ["wsi", "ct"],
    "device": "auto",
    "graph": {"preset": None, "workers": 1, "dir": None},
    "train": {},
    "evaluation": {"backend": "sksurv"},
    "statistics": dict(DEFAULT_STATISTICS),
    # the optional clinical stage (radiopath.clinical.stage): clinical baselines when the
    # cohort has clinical columns, fixed-horizon metrics when endpoint.horizon is set. Their
    # own sections, not keys of `evaluation`, so that setting them re-runs no evaluation
    "clinical": copy.deepcopy(CLINICAL_DEFAULTS),
    "endpoint": dict(ENDPOINT_DEFAULTS),
    # where graphs, training folds and evaluation fits run (radiopath.executors): local, ray,
    # or {name: ray, address: auto, ...}; not part of any stage's configuration, so a run
    # started on one executor resumes on another
    "executor": "local",
}

VARIANTS: dict[str, tuple[str, dict]] = {"abmil_mil": ("abmil", {"use_graph": False})}
"""Benchmark names of trained aggregators with a fixed training override: name -> (the
aggregator trained, the ``train`` keys it sets). ``abmil_mil`` is ABMIL without the graph
encoder (the paper's ABMIL baseline)."""


# ``train`` keys the benchmark sets itself from its own sections (they would be overridden)
_SET_BY_BENCHMARK = {
    "aggregator": "aggregators",
    "modalities": "modalities",
    "seed": "seed",
    "n_folds": "folds",
    "graph_preset": "graph.preset",
}


def allowed_keys() -> dict:
    """Every key a benchmark configuration may set, at every depth (for
    :func:`radiopath.config.check_known_keys`): :data:`DEFAULTS`, the ``train`` section as
    the training stage takes it (less the keys the benchmark sets itself), the ``evaluation``
    section as the evaluation stage takes it, plus ``backend``. ``graph.preset`` is checked
    by the graph stage's own resolver (a name, a path, a preset's keys or one per modality)."""
    from radiopath.training.config import allowed_keys as training_keys

    train = {k: v for k, v in training_keys().items() if k not in _SET_BY_BENCHMARK}
    return {
        **DEFAULTS,
        "train": train,
        "evaluation": {**EVALUATION_DEFAULTS, **DEFAULTS["evaluation"]},
    }


def known_aggregators() -> tuple[str, ...]:
    from radiopath.models import AGGREGATORS

    return (*AGGREGATORS, *VARIANTS, *BASELINES)


_NAME_OR_NULL = Either((Text(), OneOf((None,))))

# What the benchmark's own scalar keys may hold (radiopath.config_rules); each stage's
# section (train, evaluation, statistics, clinical, endpoint, executor) is checked by its
# stage's resolver.
BENCHMARK_RULES: dict = {
    "seed": Number(low=0, integer=True),
    "folds": Number(low=2, integer=True),
    "repeats": Number(low=1, integer=True),
    "device": Text(),
    "graph.workers": Number(low=1, integer=True, optional=True),
    "graph.dir": _NAME_OR_NULL,
    **{
        f"clinical.leibovich.{k}": _NAME_OR_NULL
        for k in ("t_stage", "n_stage", "size", "grade", "necrosis")
    },
}


def validate_benchmark_config(cfg: dict, cohort: Cohort) -> None:
    """Refuse bad flags before any work starts, naming the flag and the bad value.

    Every key at any depth is checked (:func:`allowed_keys`), then each section by its
    stage's resolver: ``train`` for every aggregator the benchmark trains, ``evaluation``,
    ``statistics`` and the graph presets; an error names the dotted key
    (``train.sparra.alpah0``)."""
    for key, top in _SET_BY_BENCHMARK.items():
        if isinstance(cfg.get("train"), dict) and key in cfg["train"]:
            raise RadiopathInputError(
                f"the benchmark sets this from its {top!r} setting; set {top} instead",
                field=f"train.{key}",
            )
    check_known_keys(cfg, allowed_keys())
    check_rules(cfg, BENCHMARK_RULES)
    aggs = known_aggregators()
    for a in cfg["aggregators"]:
        if a not in aggs:
            raise RadiopathInputError(
                f"unknown aggregator {a!r}; choose from {list(aggs)}", field="aggregators"
            )
    for m in cfg["models"]:
        if m not in KNOWN_MODELS:
            raise RadiopathInputError(
                f"unknown model {m!r}; choose from {list(KNOWN_MODELS)}", field="models"
            )
    if not cfg["aggregators"] or not cfg["models"] or not cfg["modalities"]:
        raise RadiopathInputError("aggregators, models and modalities must not be empty")
    backend = cfg["evaluation"].get("backend", "sksurv")
    if backend not in KNOWN_BACKENDS:
        raise RadiopathInputError(
            f"unknown backend {backend!r}; choose from {list(KNOWN_BACKENDS)}", field="backend"
        )
    imaging = [m for m in cfg["modalities"] if m != "clinical"]
    cohort.require_modalities(cfg["modalities"])
    if not imaging:
        raise RadiopathInputError(
            "the benchmark needs at least one imaging modality (wsi, ct)", field="modalities"
        )
    k = int(cfg["folds"])
    n_events = int(cohort.events.sum())
    if k < 2:
        raise RadiopathInputError(f"need at least 2 folds, got {k}", field="folds")
    r = cfg["repeats"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise RadiopathInputError(f"must be a positive integer, got {r!r}", field="repeats")
    cfg["statistics"] = resolve_statistics_config(cfg.get("statistics"))
    executor = resolve_executor_config(cfg.get("executor"))
    check_executor_available(executor)
    cfg["executor"] = executor.as_dict()
    resolve_evaluation_config({k: v for k, v in cfg["evaluation"].items() if k != "backend"})
    cfg["clinical"] = resolve_clinical_config(cfg.get("clinical"))
    endpoint = dict(cfg.get("endpoint") or {})
    train = cfg.get("train") or {}
    if train.get("head") == "binary" and endpoint.get("horizon") is None:
        # the binary head's own horizon is the endpoint its risks are scored at
        endpoint.update(
            horizon=train.get("horizon"), time_unit=train.get("time_unit", "days"), score="binary"
        )
    cfg["endpoint"] = resolve_endpoint_config(endpoint, cohort)
    _check_stages(cfg, imaging)
    if n_events < k:
        raise RadiopathInputError(
            f"{n_events} events cannot be spread over {k} folds; use fewer folds",
            path=cohort.path,
            field="folds",
        )


def _check_stages(cfg: dict, imaging: list[str]) -> None:
    """Resolve the graph presets and every trained aggregator's training configuration as
    the stages will, so that a bad value fails now rather than after the graphs are built."""
    from radiopath.graph.cohort import resolve_cohort_presets
    from radiopath.training.config import resolve_training_config

    with config_section("graph.preset", whole="preset"):
        resolve_cohort_presets(cfg["graph"].get("preset"), imaging)
    for agg in cfg["aggregators"]:
        if agg in BASELINES:
            continue
        try:
            with config_section("train"):
                resolve_training_config(
                    _train_config(agg, cfg), aggregator=_trained(agg), modalities=cfg["modalities"]
                )
        except RadiopathInputError as exc:
            top = _SET_BY_BENCHMARK.get((exc.field or "").removeprefix("train."))
            if top is None:
                raise
            # a value the benchmark passes to training from its own setting: name that one
            raise RadiopathInputError(f"training {agg}: {exc.reason}", field=top) from exc


def _benchmark_config_file(path: str | os.PathLike | None) -> dict:
    """A benchmark configuration file, or an experiment file without a grid (its ``base``)."""
    if path is None:
        return {}
    data = load_config_file(path)
    if "base" in data:
        if data.get("grid"):
            raise RadiopathInputError(
                "this experiment has a grid: run it with `radiopath sweep`", path=path, field="grid"
            )
        return dict(data["base"])
    return data


def _trained(agg: str) -> str:
    """The aggregator a benchmark name trains (a variant's base aggregator)."""
    return VARIANTS.get(agg, (agg, {}))[0]


def _train_config(agg: str, cfg: dict) -> dict:
    """The training configuration of one benchmark aggregator (its variant's keys applied)."""
    if agg in BASELINES:
        return {}
    _, override = VARIANTS.get(agg, (agg, {}))
    return {**copy.deepcopy(cfg["train"]), **override, "seed": cfg["seed"], "n_folds": cfg["folds"]}
