"""The benchmark's configuration: a frozen :class:`BenchmarkConfig` tree, built and checked
before any work starts (:func:`build_benchmark_config`).

A benchmark is configured by :data:`DEFAULTS` <- a file <- flags, merged as mappings and then
built once into the typed tree: the benchmark's own keys, the ``graph`` stage's, the
``evaluation`` protocol (:class:`~radiopath.evaluation.config.EvaluationConfig` plus the
``backend``), ``statistics``, ``clinical``, ``endpoint`` and ``executor``. An unknown key or
a wrong value at any depth is refused by its dotted key with the values allowed there. The
``train`` section is kept as the mapping given and checked by the training stage's resolver
for every aggregator the benchmark trains (:func:`_check_training`). ``docs/config-benchmark.md``
documents every key (:func:`reference_page`).

:func:`radiopath.benchmark.run_benchmark` reads its configuration through this module, and
:mod:`radiopath.sweep` builds each point of a sweep with it; the names are re-exported by
:mod:`radiopath.benchmark`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from radiopath.clinical.stage import ClinicalConfig, EndpointConfig
from radiopath.config import check_known_keys, config_section, load_config_file
from radiopath.config_rules import Kind, ListOf, Number, OneOf, Text
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import BACKENDS, EvaluationConfig
from radiopath.evaluation.config import MODELS as KNOWN_MODELS
from radiopath.evaluation.stats import StatisticsConfig
from radiopath.executors import ExecutorConfig, check_executor_available, resolve_executor_config
from radiopath.executors.config import EXECUTORS
from radiopath.io import MODALITIES, Cohort
from radiopath.models import AGGREGATORS
from radiopath.training.baselines import BASELINES
from radiopath.typed_config import TypedConfig, generated_page, section, setting

VARIANTS: dict[str, tuple[str, dict]] = {"abmil_mil": ("abmil", {"use_graph": False})}
"""Benchmark names of trained aggregators with a fixed training override: name -> (the
aggregator trained, the ``train`` keys it sets). ``abmil_mil`` is ABMIL without the graph
encoder (the paper's ABMIL baseline)."""


def known_aggregators() -> tuple[str, ...]:
    """The trained aggregators, their variants and the untrained baselines."""
    return (*AGGREGATORS, *VARIANTS, *BASELINES)


# ``train`` keys the benchmark sets itself from its own settings (they would be overridden)
_SET_BY_BENCHMARK = {
    "aggregator": "aggregators",
    "modalities": "modalities",
    "seed": "seed",
    "folds": "folds",
    "graph_preset": "graph.preset",
}

_FOLDER = Kind((str, type(None)), "a folder path or null")


@dataclass(frozen=True)
class BenchmarkGraphConfig(TypedConfig):
    """The graph stage: which presets, how many local workers, which folder."""

    preset: object = setting(
        None,
        doc="Graph preset: null (each modality's own), a name or YAML path, a preset's keys, "
        "or one of these per modality ({wsi: ..., ct: ...}); checked by the graph stage.",
        allowed="null, a preset name or path, a mapping of preset keys or one per modality",
    )
    workers: int | None = setting(
        1, Number(low=1, integer=True, optional=True), "Local processes building graphs."
    )
    dir: str | None = setting(
        None,
        _FOLDER,
        "A folder of built graphs to use (and fill) instead of OUT/graphs (the sweep shares "
        "one per graph configuration).",
    )


@dataclass(frozen=True)
class BenchmarkEvaluationConfig(EvaluationConfig):
    """The downstream evaluation (docs/config-evaluation.md) and the backend that runs it."""

    backend: str = setting(
        "sksurv",
        OneOf(BACKENDS),
        "sksurv: scikit-survival's estimators; torch: the torch estimators (CPU or GPU).",
    )

    def protocol(self) -> EvaluationConfig:
        """The evaluation protocol alone, as the evaluation stage takes it."""
        return EvaluationConfig(**{f.name: getattr(self, f.name) for f in fields(EvaluationConfig)})


@dataclass(frozen=True)
class BenchmarkConfig(TypedConfig):
    """A benchmark: graphs -> every aggregator on the same folds -> evaluation -> report."""

    seed: int = setting(0, Number(low=0, integer=True), "Seed of the folds and the training.")
    folds: int = setting(5, Number(low=2, integer=True), "Outer cross-validation folds.")
    repeats: int = setting(
        1, Number(low=1, integer=True), "Repeated cross-validation: R splits (seeds seed..)."
    )
    aggregators: tuple = setting(
        ["sparra", "abmil", "mean"],
        ListOf(OneOf(known_aggregators())),
        "Aggregators compared (trained ones, the variant abmil_mil, the baseline raw_mean).",
    )
    models: tuple = setting(
        list(KNOWN_MODELS), ListOf(OneOf(KNOWN_MODELS)), "Downstream survival models."
    )
    modalities: tuple = setting(
        ["wsi", "ct"],
        ListOf(OneOf((*MODALITIES, "clinical"))),
        "Modalities (at least one imaging; each present in the cohort).",
    )
    device: str = setting("auto", Text(), "auto, cpu, cuda, cuda:1, mps.")
    graph: BenchmarkGraphConfig = section(BenchmarkGraphConfig, BenchmarkGraphConfig.__doc__)
    train: dict = setting(
        None,
        Kind((Mapping, type(None)), "a mapping (null: the training defaults)"),
        "The training configuration of every trained aggregator (the training stage's keys, "
        "less aggregator, modalities, seed, folds and graph_preset, which the benchmark "
        "sets); checked by the training stage for each aggregator.",
        convert=lambda value: copy.deepcopy(dict(value or {})),
    )
    evaluation: BenchmarkEvaluationConfig = section(
        BenchmarkEvaluationConfig, BenchmarkEvaluationConfig.__doc__
    )
    statistics: StatisticsConfig = section(StatisticsConfig, StatisticsConfig.__doc__)
    clinical: ClinicalConfig = section(ClinicalConfig, ClinicalConfig.__doc__)
    endpoint: EndpointConfig = section(EndpointConfig, EndpointConfig.__doc__)
    executor: ExecutorConfig = setting(
        "local",
        doc="Where graphs, training folds and evaluation fits run (radiopath.executors); not "
        "part of any stage's configuration, so a run resumes on another executor.",
        convert=resolve_executor_config,
        allowed=f"one of {', '.join(EXECUTORS)}, or a mapping of name, address, workers, "
        "cpus_per_task, gpus_per_task, max_retries",
    )

    @property
    def imaging(self) -> list[str]:
        """The imaging modalities (the graph stage's)."""
        return [m for m in self.modalities if m != "clinical"]

    def trained(self, agg: str) -> str:
        """The aggregator a benchmark name trains (a variant's base aggregator)."""
        return VARIANTS.get(agg, (agg, {}))[0]

    def training_config(self, agg: str) -> dict:
        """The training configuration of one benchmark aggregator (its variant's keys
        applied; a baseline trains nothing: ``{}``)."""
        if agg in BASELINES:
            return {}
        _, override = VARIANTS.get(agg, (agg, {}))
        return {**copy.deepcopy(self.train), **override, "seed": self.seed, "folds": self.folds}

    def resolved_training(self, agg: str):
        """The :class:`~radiopath.training.config.TrainingConfig` the training stage builds
        for ``agg`` (None for a baseline, which trains nothing)."""
        if agg in BASELINES:
            return None
        from radiopath.training.config import resolve_training_config

        return resolve_training_config(
            self.training_config(agg), aggregator=self.trained(agg), modalities=self.modalities
        )


DEFAULTS: dict = {
    **BenchmarkConfig().to_dict(),
    "train": {},
    "evaluation": {"backend": BenchmarkEvaluationConfig().backend},
    "executor": "local",
}
"""The mapping a benchmark's layers (file, flags) are laid over: the benchmark's defaults,
with the ``train`` and ``evaluation`` sections as given (a run's record keeps them so)."""


def build_benchmark_config(config: Mapping, cohort: Cohort) -> BenchmarkConfig:
    """Build and check a benchmark's configuration before any work starts.

    ``config`` is :data:`DEFAULTS` with the file and the flags laid over it. Every key at any
    depth is checked (the typed tree), then what needs several keys or the cohort: the
    modalities present, the events per fold, the endpoint's horizon, the executor's package,
    the graph presets and the training configuration of every aggregator it trains.

    Raises
    ------
    RadiopathInputError
        Naming the dotted key (``train.sparra.alpah0``, ``evaluation.coxph.alpha``) and the
        values allowed there.
    """
    _refuse_keys_set_by_benchmark(config.get("train"))
    cfg = BenchmarkConfig.from_mapping(config)
    cfg = dataclasses.replace(cfg, endpoint=_endpoint(cfg))
    cohort.require_modalities(cfg.modalities)
    if not cfg.imaging:
        raise RadiopathInputError(
            "the benchmark needs at least one imaging modality (wsi, ct)", field="modalities"
        )
    cfg.endpoint.check(cohort)
    check_executor_available(cfg.executor)
    with config_section("graph.preset", whole="preset"):
        from radiopath.graph.cohort import resolve_cohort_presets

        resolve_cohort_presets(cfg.graph.preset, cfg.imaging)
    _check_training(cfg)
    n_events = int(cohort.events.sum())
    if n_events < cfg.folds:
        raise RadiopathInputError(
            f"{n_events} events cannot be spread over {cfg.folds} folds; use fewer folds",
            path=cohort.path,
            field="folds",
        )
    return cfg


def _refuse_keys_set_by_benchmark(train) -> None:
    for key, top in _SET_BY_BENCHMARK.items():
        if isinstance(train, Mapping) and key in train:
            raise RadiopathInputError(
                f"the benchmark sets this from its {top!r} setting; set {top} instead",
                field=f"train.{key}",
            )


def _endpoint(cfg: BenchmarkConfig) -> EndpointConfig:
    """The endpoint; a binary head's own horizon is the endpoint its risks are scored at."""
    if cfg.train.get("head") != "binary" or cfg.endpoint.horizon is not None:
        return cfg.endpoint
    filled = {
        **cfg.endpoint.to_dict(),
        "horizon": cfg.train.get("horizon"),
        "time_unit": cfg.train.get("time_unit", "days"),
        "score": "binary",
    }
    return EndpointConfig.from_mapping(filled, "endpoint")


def _check_training(cfg: BenchmarkConfig) -> None:
    """The ``train`` section as the training stage will resolve it: its keys whatever the
    benchmark trains, and its values for every aggregator it trains (a variant trains its
    base aggregator with its own keys; a baseline trains nothing), so that a bad value fails
    now rather than after the graphs are built."""
    from radiopath.training.config import allowed_keys

    check_known_keys(cfg.train, allowed_keys(), "train")
    for agg in cfg.aggregators:
        try:
            with config_section("train"):
                cfg.resolved_training(agg)
        except RadiopathInputError as exc:
            top = _SET_BY_BENCHMARK.get((exc.field or "").removeprefix("train."))
            if top is None:
                raise
            # a value the benchmark passes to training from its own setting: name that one
            raise RadiopathInputError(f"training {agg}: {exc.reason}", field=top) from exc


def benchmark_record(cfg: BenchmarkConfig, config: Mapping, cohort_path: str) -> dict:
    """The configuration a run records (``run.json``) and fingerprints its stages with: the
    built tree as plain values, with the ``evaluation`` section as ``config`` (the layered
    mapping it was built from) gives it -- the keys set, not every default of the protocol
    -- the executor's every key, and the cohort's path."""
    record = cfg.to_dict()
    record["evaluation"] = copy.deepcopy(dict(config.get("evaluation") or {}))
    record["executor"] = cfg.executor.as_dict()
    record["cohort"] = cohort_path
    return record


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


def reference_page() -> str:
    """``docs/config-benchmark.md``: every key of :class:`BenchmarkConfig`, generated from its
    declarations (``tests/test_benchmark_config.py`` keeps the page equal)."""
    return generated_page(
        BenchmarkConfig,
        "",
        title="Benchmark configuration",
        page="docs/config-benchmark.md",
        intro=(
            "The file of `radiopath benchmark --config` (and the `base` of an experiment, "
            "docs/config-sweep.md). Every key is optional; a wrong key or value at any depth is "
            "refused by its dotted name before any work starts. The `evaluation` section is the "
            "evaluation stage's (docs/config-evaluation.md) plus `evaluation.backend`."
        ),
    )
