"""The benchmark: graphs -> each aggregator trained on the same folds -> downstream evaluation -> report.

One run directory holds the whole comparison::

    OUT/run.json             resolved config, seed, versions, git commit, times
    OUT/graphs/              graphs of every patient and modality (+ manifest.csv)
    OUT/folds.csv            the outer folds (patient_id, repeat, fold), shared by every aggregator
    OUT/runs/<aggregator>/   one training run per aggregator (embeddings, logs, risks, ...)
    OUT/predictions.csv      test-fold predictions of every aggregator and model
    OUT/survival.csv         test-fold survival functions at each fold's time grid and horizons
    OUT/metrics.csv          every metric of every fold
    OUT/selection.csv        hyper-parameters chosen per fold, and training-risk thresholds
    OUT/intervals.csv        bootstrap interval of every study of every aggregator
    OUT/comparisons.csv      paired differences of every two aggregators (bootstrap, Wilcoxon, Holm)
    OUT/importance/<aggregator>/<patient_id>.<modality>.csv
    OUT/clinical/baselines.csv, OUT/clinical/cox.csv   clinical baselines (cohorts with
                             clinical columns; :mod:`radiopath.clinical.stage`)
    OUT/horizon_metrics.csv  fixed-horizon classification metrics (``endpoint.horizon``)
    OUT/summary.md, OUT/figures/, OUT/report.html

``repeats: R`` runs R stratified outer splits (seeds ``seed .. seed+R-1``); every table and
test uses all R x K folds. Besides the trained aggregators (:data:`radiopath.models.AGGREGATORS`)
two of the paper's baselines as the paper ran them are selectable: ``raw_mean`` (the untrained
mean of the raw patch embeddings, :mod:`radiopath.training.baselines`) and ``abmil_mil``
(ABMIL trained without the graph encoder, :data:`VARIANTS`).

Every stage is resumable: graphs and training folds already done are skipped by the stages
themselves, and a stage whose configuration has not changed since it finished is not run
again (``OUT/stages.json`` keeps a hash of each finished stage's configuration). A killed
run started again with the same command continues where it stopped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from radiopath.clinical.stage import (
    CLINICAL_DEFAULTS,
    ENDPOINT_DEFAULTS,
    resolve_clinical_config,
    resolve_endpoint_config,
)
from radiopath.config import (
    RunRecord,
    check_known_keys,
    config_section,
    load_config_file,
    resolve_config,
)
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import BACKENDS as KNOWN_BACKENDS
from radiopath.evaluation.config import DEFAULT_CONFIG as EVALUATION_DEFAULTS
from radiopath.evaluation.config import MODELS as KNOWN_MODELS
from radiopath.evaluation.config import resolve_evaluation_config
from radiopath.evaluation.stats import DEFAULT_STATISTICS, resolve_statistics_config
from radiopath.executors import (
    Executor,
    ExecutorArg,
    borrowed,
    check_executor_available,
    resolve_executor_config,
)
from radiopath.io import Cohort, read_cohort
from radiopath.runkit import (
    WriteError,
    digests,
    read_json,
    verify_digests,
    write_bytes,
    write_csv,
    write_json,
)
from radiopath.training.baselines import BASELINES

log = logging.getLogger(__name__)


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


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class BenchmarkResult:
    """What a benchmark produced: the merged tables and where they are."""

    out_dir: Path
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    summary: str


class StageLedger:
    """Remembers which stages finished with which configuration and what they wrote
    (``stages.json``: per stage the hash of its configuration and the SHA-256 of its output
    files). A stage counts as finished only while its configuration is the same and its
    outputs are intact; an output truncated, removed or changed since is reported and the
    stage runs again (each stage resumes its own finished units, e.g. training folds)."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir
        self.path = out_dir / "stages.json"
        done = read_json(self.path, default={})
        self.done: dict[str, dict] = {
            k: (v if isinstance(v, dict) else {"config": v}) for k, v in done.items()
        }

    def finished(self, name: str, config) -> bool:
        entry = self.done.get(name)
        if entry is None or entry.get("config") != _hash(config):
            return False
        bad = verify_digests(self.root, entry.get("outputs") or {})
        if bad:
            log.warning(
                "stage %s: %s missing, truncated or changed since it finished; it runs again",
                name,
                ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
            )
            return False
        return True

    def mark(
        self, name: str, config, outputs: Sequence[Path] = (), seconds: float | None = None
    ) -> None:
        self.done[name] = {"config": _hash(config), "outputs": digests(self.root, outputs)}
        if seconds is not None:  # shown in the report's provenance
            self.done[name]["seconds"] = round(seconds, 3)
        write_json(self.path, self.done)

    def digest(self, name: str) -> dict:
        """The recorded outputs of a finished stage (for the stages that read them)."""
        return (self.done.get(name) or {}).get("outputs") or {}


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


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy) every file of ``src`` under ``dst``."""
    for f in src.rglob("*"):
        if not f.is_file():
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target.unlink()
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


def run_benchmark(
    cohort: str | os.PathLike | Cohort,
    out_dir: str | os.PathLike,
    config: dict | None = None,
    *,
    config_file: str | os.PathLike | None = None,
    strict: bool = False,
    progress: bool = True,
    stage_hook: Callable[[str], None] | None = None,
    executor: ExecutorArg = None,
) -> BenchmarkResult:
    """Run the whole comparison on one cohort.

    Parameters
    ----------
    cohort
        A cohort CSV (or a :class:`~radiopath.io.Cohort`).
    out_dir
        The run directory; an existing one is resumed.
    config
        Overrides of :data:`DEFAULTS` (e.g. ``{"aggregators": ["sparra", "mean"],
        "train": {"epochs": 10}}``); applied after ``config_file``.
    strict
        Stop on the first unreadable file instead of reporting and skipping it.
    stage_hook
        Called with each stage's name after it finishes (used to test resumption).
    executor
        An open executor to run the stages' units on, instead of the configuration's
        ``executor`` (:mod:`radiopath.executors`).
    """
    from radiopath.evaluation import evaluate_run

    cfg = resolve_config(DEFAULTS, None, _benchmark_config_file(config_file))
    cfg = resolve_config(cfg, None, config)
    cohort = cohort if isinstance(cohort, Cohort) else read_cohort(cohort, strict=strict)
    validate_benchmark_config(cfg, cohort)
    out = Path(out_dir)
    imaging = [m for m in cfg["modalities"] if m != "clinical"]
    cfg["cohort"] = str(Path(cohort.path).resolve())
    stages = ["graphs"] + [
        f"{kind}:{a}" for a in cfg["aggregators"] for kind in ("train", "evaluate")
    ]
    if (cohort.clinical_columns and cfg["clinical"]["enabled"]) or cfg["endpoint"]["horizon"]:
        stages.append("clinical")
    stages.append("report")

    with (
        borrowed(executor if executor is not None else cfg["executor"]) as ex,
        RunRecord(out, command="benchmark", config=cfg, seed=cfg["seed"]) as run,
    ):
        if cohort.problems:
            run.update(skipped=[str(p) for p in cohort.problems])
        ledger = StageLedger(out)
        bar = tqdm(stages, desc="benchmark", unit="stage", disable=not progress)
        clinical_failure: str | None = None
        graph_dir = Path(cfg["graph"]["dir"]) if cfg["graph"].get("dir") else out / "graphs"
        for stage in bar:
            bar.set_postfix_str(stage)
            kind, _, agg = stage.partition(":")
            if kind == "graphs":
                stage_cfg = {"graph": cfg["graph"], "modalities": imaging, "cohort": cfg["cohort"]}
            elif kind == "train":
                stage_cfg = {
                    # what the stage read: the graphs as built (a rebuilt graph reruns it)
                    "inputs": ledger.digest("graphs"),
                    "train": _train_config(agg, cfg),
                    "modalities": cfg["modalities"],
                    "seed": cfg["seed"],
                    "folds": cfg["folds"],
                    "repeats": cfg["repeats"],
                    "graph": cfg["graph"],
                    "cohort": cfg["cohort"],
                }
            elif kind == "evaluate":
                stage_cfg = {
                    "inputs": ledger.digest(f"train:{agg}"),
                    "train": cfg["train"],
                    "evaluation": cfg["evaluation"],
                    "models": cfg["models"],
                    "seed": cfg["seed"],
                    "modalities": cfg["modalities"],
                }
            elif kind == "clinical":
                stage_cfg = {
                    "inputs": [ledger.digest(f"train:{a}") for a in cfg["aggregators"]],
                    **{k: cfg[k] for k in ("clinical", "endpoint", "seed", "cohort")},
                }
            else:
                stage_cfg = {
                    k: cfg[k]
                    for k in (
                        "aggregators",
                        "models",
                        "modalities",
                        "evaluation",
                        "train",
                        "repeats",
                        "statistics",
                    )
                }
                stage_cfg["inputs"] = [ledger.digest(f"evaluate:{a}") for a in cfg["aggregators"]]
                stage_cfg["clinical"] = [ledger.digest("clinical"), clinical_failure]
            record = out / "runs" / agg / "run.json"
            damaged = kind in ("train", "evaluate") and record.exists() and not read_json(record)
            if not damaged and ledger.finished(stage, stage_cfg):
                log.info("stage %s already finished; skipped", stage)
                continue
            started = time.perf_counter()
            if kind == "graphs":
                manifest = build_graph_stage(cohort, graph_dir, cfg, strict, progress, ex)
                run.update(graphs={"built": int(len(manifest))})
            elif kind == "train":
                _train(agg, cohort, graph_dir, imaging, cfg, out, progress, ex)
            elif kind == "clinical":
                clinical_failure = _clinical_stage(out, cohort, cfg, run)
                if clinical_failure is not None:
                    continue  # reported in run.json and the report; tried again next run
            elif kind == "evaluate":
                evaluate_run(
                    out / "runs" / agg,
                    models=cfg["models"],
                    backend=cfg["evaluation"].get("backend", "sksurv"),
                    config={k: v for k, v in cfg["evaluation"].items() if k != "backend"},
                    device=cfg["device"],
                    aggregator=agg,
                    executor=ex,
                )
            else:
                _merge_tables(out, cfg["aggregators"])
                from radiopath.report import write_report

                write_report(out, statistics=cfg["statistics"])
            ledger.mark(
                stage,
                stage_cfg,
                _stage_outputs(kind, agg, out, graph_dir),
                seconds=time.perf_counter() - started,
            )
            if stage_hook is not None:
                stage_hook(stage)
        metrics = pd.read_csv(out / "metrics.csv")
        predictions = pd.read_csv(out / "predictions.csv")
        summary = (out / "summary.md").read_text()
        run.update(
            result={
                "metrics": "metrics.csv",
                "predictions": "predictions.csv",
                "summary": "summary.md",
            }
        )
    return BenchmarkResult(out, metrics, predictions, summary)


def _clinical_stage(out: Path, cohort: Cohort, cfg: dict, run: RunRecord) -> str | None:
    """The optional clinical stage (:func:`radiopath.clinical.stage.write_clinical_outputs`);
    returns None, or the error of a failure. A failure is logged, recorded in ``run.json``
    (``clinical.status: failed`` with the error, shown in the report's provenance), the
    stage's earlier files are removed (the report shows no stale tables) and the
    benchmark goes on."""
    from radiopath.clinical.stage import write_clinical_outputs

    try:
        written, notes = write_clinical_outputs(
            out, cohort, cfg["aggregators"], cfg["clinical"], cfg["endpoint"], seed=cfg["seed"]
        )
    except WriteError:
        raise  # a full disk or read-only folder stops every stage alike (README: faults)
    except Exception as exc:  # an optional stage: any other failure is reported, not raised
        log.warning("the clinical stage failed (the benchmark goes on): %s", exc, exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
        run.update(clinical={"status": "failed", "error": error})
        for stale in _stage_outputs("clinical", "", out, out):
            stale.unlink(missing_ok=True)
        return error
    run.update(
        clinical={
            "status": "finished",
            "files": [p.relative_to(out).as_posix() for p in written],
            "notes": notes,
        }
    )
    return None


def build_graph_stage(
    cohort: Cohort, graph_dir: Path, cfg: dict, strict: bool, progress: bool, executor: Executor
) -> pd.DataFrame:
    """The benchmark's graph stage (the sweep calls it too, to build each graph folder its
    points share once): one bag per unit on a parallel executor, else ``graph.workers``
    local processes."""
    from radiopath.graph import build_cohort_graphs

    return build_cohort_graphs(
        cohort,
        graph_dir,
        preset=cfg["graph"].get("preset"),
        workers=cfg["graph"].get("workers", 1),
        strict=strict,
        progress=progress,
        modalities=[m for m in cfg["modalities"] if m != "clinical"],
        executor=executor if executor.remote else None,
    )


def _stage_outputs(kind: str, agg: str, out: Path, graph_dir: Path) -> list[Path]:
    """The files a finished stage leaves for the stages after it (checked on resume)."""
    if kind == "graphs":
        manifest = graph_dir / "manifest.csv"
        graphs = pd.read_csv(manifest, dtype=str)["graph"] if manifest.exists() else []
        return [manifest, *(graph_dir / g for g in graphs)]
    run_dir = out / "runs" / agg
    if kind == "train":
        return [
            run_dir / "risks.csv",
            *sorted((run_dir / "embeddings").glob("fold_*.npz")),
            *sorted((run_dir / "importance").rglob("*.csv")),
        ]
    if kind == "evaluate":
        return [run_dir / f"{n}.csv" for n in ("predictions", "metrics", "selection", "survival")]
    if kind == "clinical":
        return [*sorted((out / "clinical").glob("*.csv")), *out.glob("horizon_metrics.csv")]
    return [out / n for n in ("metrics.csv", "predictions.csv", "summary.md", "report.html")]


def _trained(agg: str) -> str:
    """The aggregator a benchmark name trains (a variant's base aggregator)."""
    return VARIANTS.get(agg, (agg, {}))[0]


def _train_config(agg: str, cfg: dict) -> dict:
    """The training configuration of one benchmark aggregator (its variant's keys applied)."""
    if agg in BASELINES:
        return {}
    _, override = VARIANTS.get(agg, (agg, {}))
    return {**copy.deepcopy(cfg["train"]), **override, "seed": cfg["seed"], "n_folds": cfg["folds"]}


def _check_folds_file(path: Path, cfg: dict) -> None:
    """The run's folds.csv must be the folds this configuration asks for."""
    from radiopath.training.folds import read_folds

    table = read_folds(path)
    repeats = int(table["repeat"].nunique())
    per_repeat = int(table.groupby("repeat")["fold"].nunique().max())
    if repeats != cfg["repeats"] or per_repeat != cfg["folds"]:
        raise RadiopathInputError(
            f"this run's folds are {per_repeat} folds x {repeats} repeat(s), the configuration "
            f"asks for {cfg['folds']} x {cfg['repeats']}; use a new output folder",
            path=path,
            field="repeats" if repeats != cfg["repeats"] else "folds",
        )


def _train(agg, cohort, graph_dir, imaging, cfg, out: Path, progress: bool, executor) -> None:
    """Train (or, for a baseline, compute) one aggregator on the run's shared folds."""
    from radiopath.training import train_cross_validated
    from radiopath.training.baselines import train_raw_mean

    folds_file = out / "folds.csv"
    if folds_file.exists():
        _check_folds_file(folds_file, cfg)
    folds = folds_file if folds_file.exists() else None
    run_dir = out / "runs" / agg
    trained = _trained(agg)
    if agg in BASELINES:
        train_raw_mean(
            cohort,
            modalities=imaging,
            out_dir=run_dir,
            folds=folds,
            n_folds=cfg["folds"],
            seed=cfg["seed"],
            repeats=cfg["repeats"],
            progress=progress,
        )
    else:
        train_cross_validated(
            cohort,
            graph_dir,
            aggregator=trained,
            modalities=cfg["modalities"],
            out_dir=run_dir,
            config=_train_config(agg, cfg),
            folds=folds,
            device=cfg["device"],
            resume=True,
            progress=progress,
            repeats=cfg["repeats"],
            executor=executor,
        )
    if not folds_file.exists():
        write_bytes(folds_file, (run_dir / "folds.csv").read_bytes())
    if (run_dir / "importance" / trained).is_dir():
        _link_tree(run_dir / "importance" / trained, out / "importance" / agg)


def _merge_tables(out: Path, aggregators: Sequence[str]) -> None:
    """Gather every aggregator's predictions, survival functions, metrics and model selection
    into top-level tables."""
    for name in ("predictions.csv", "survival.csv", "metrics.csv", "selection.csv"):
        frames = []
        for agg in aggregators:
            path = out / "runs" / agg / name
            if not path.exists() and name == "survival.csv":
                # evaluated before survival.csv existed: its IBS / Brier get no interval
                log.warning("%s is missing (an older evaluation): no IBS intervals", path)
                continue
            if not path.exists():
                raise RadiopathInputError(
                    "evaluation output is missing; run the benchmark again", path=path
                )
            frames.append(pd.read_csv(path))
        if not frames:
            continue
        merged = pd.concat(frames, ignore_index=True)
        write_csv(merged, out / name)
