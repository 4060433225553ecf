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
again (``OUT/stages.json``, :func:`stage_ledger`, keeps a fingerprint of each finished
stage's configuration). A killed run started again with the same command continues where
it stopped. On a parallel executor the first ``train`` stage trains every later trained
aggregator's folds too, as units of one map (its workers do not idle at the end of each
aggregator); those stages are marked finished with it.

The configuration (:class:`BenchmarkConfig`, built and checked by
:func:`build_benchmark_config` before any work) lives in :mod:`radiopath.benchmark_config`;
its public names are importable from here too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from radiopath.benchmark_config import (
    DEFAULTS,
    VARIANTS,
    BenchmarkConfig,
    _benchmark_config_file,
    benchmark_record,
    build_benchmark_config,
    known_aggregators,
)
from radiopath.config import RunRecord, naming_file, resolve_config
from radiopath.errors import RadiopathInputError
from radiopath.executors import Executor, ExecutorArg, borrowed
from radiopath.io import Cohort, read_cohort
from radiopath.runkit import (
    Ledger,
    WriteError,
    read_json,
    write_bytes,
    write_csv,
)
from radiopath.training.baselines import BASELINES

__all__ = [
    "DEFAULTS",
    "VARIANTS",
    "BenchmarkConfig",
    "BenchmarkResult",
    "build_benchmark_config",
    "build_graph_stage",
    "known_aggregators",
    "run_benchmark",
    "stage_ledger",
]

log = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    """What a benchmark produced: the merged tables and where they are."""

    out_dir: Path
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    summary: str


def stage_ledger(out_dir: Path) -> Ledger:
    """The benchmark's stages that finished (``stages.json``; :class:`~radiopath.runkit.Ledger`:
    per stage the fingerprint of its configuration, the SHA-256 of its output files and the
    seconds it took). A stage counts as finished only while its configuration is the same
    and its outputs are intact; otherwise it runs again (each stage resumes its own finished
    units, e.g. training folds)."""
    return Ledger(out_dir / "stages.json", label="stage")


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
    from_file = _benchmark_config_file(config_file)
    layered = resolve_config(resolve_config(DEFAULTS, None, from_file), None, config)
    cohort = cohort if isinstance(cohort, Cohort) else read_cohort(cohort, strict=strict)
    with naming_file(config_file, from_file, overrides=config):  # a key the file sets: named
        cfg = build_benchmark_config(layered, cohort)
    out = Path(out_dir)
    record = benchmark_record(cfg, layered, str(Path(cohort.path).resolve()))
    stages = _stage_names(cfg, cohort)
    with (
        borrowed(executor if executor is not None else cfg.executor) as ex,
        RunRecord(out, command="benchmark", config=record, seed=cfg.seed) as run,
    ):
        if cohort.problems:
            run.update(skipped=[str(p) for p in cohort.problems])
        ledger = stage_ledger(out)
        bar = tqdm(stages, desc="benchmark", unit="stage", disable=not progress)
        graph_dir = Path(cfg.graph.dir) if cfg.graph.dir else out / "graphs"
        state = _BenchmarkRun(
            cohort, cfg, record, out, graph_dir, strict, progress, ex, run, ledger
        )
        for stage in bar:
            bar.set_postfix_str(stage)
            if state.run_stage(stage) and stage_hook is not None:
                stage_hook(stage)
        result = _read_result(out, run)
    return result


def _stage_names(cfg: BenchmarkConfig, cohort: Cohort) -> list[str]:
    """The benchmark's stages in order: ``graphs``, ``train:<agg>`` and ``evaluate:<agg>``
    per aggregator, ``clinical`` when it has something to do, ``report``."""
    stages = ["graphs"] + [f"{kind}:{a}" for a in cfg.aggregators for kind in ("train", "evaluate")]
    if (cohort.clinical_columns and cfg.clinical.enabled) or cfg.endpoint.horizon:
        stages.append("clinical")
    stages.append("report")
    return stages


def _read_result(out: Path, run: RunRecord) -> BenchmarkResult:
    """The merged tables of a finished run, recorded in ``run.json``."""
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


@dataclass
class _BenchmarkRun:
    """One benchmark run as its stages see it: the cohort, the built configuration and the
    form it is recorded in (``run.json``; the stages' fingerprints are made of it), the run
    directory, the executor, ``run.json`` and the ledger of finished stages."""

    cohort: Cohort
    cfg: BenchmarkConfig
    record: dict
    out: Path
    graph_dir: Path
    strict: bool
    progress: bool
    ex: Executor
    run: RunRecord
    ledger: Ledger
    clinical_failure: str | None = None  # the clinical stage's error in this run, if any
    trained_together: set = field(default_factory=set)  # later train stages run with one

    def train_group(self, agg: str) -> list[str]:
        """The aggregators the ``train:<agg>`` stage trains: ``agg`` and, on a parallel
        executor, the later trained aggregators whose train stage has not finished (their
        folds share the pool's workers; :func:`_train`)."""
        aggs = list(self.cfg.aggregators)
        if not self.ex.remote or not _joint(self.cfg, agg):
            return [agg]
        later = [
            a
            for a in aggs[aggs.index(agg) + 1 :]
            if _joint(self.cfg, a)
            and not self.ledger.finished(f"train:{a}", self.stage_config("train", a))
        ]
        return [agg, *later]

    def run_stage(self, stage: str) -> bool:
        """Run ``stage`` unless it finished before with the same configuration and intact
        outputs; True when it ran and finished (a failed clinical stage is not finished)."""
        kind, _, agg = stage.partition(":")
        if stage in self.trained_together:  # finished (and marked) with an earlier stage
            return True
        stage_cfg = self.stage_config(kind, agg)
        record = self.out / "runs" / agg / "run.json"
        damaged = kind in ("train", "evaluate") and record.exists() and not read_json(record)
        if not damaged and self.ledger.finished(stage, stage_cfg):
            log.info("stage %s already finished; skipped", stage)
            return False
        started = time.perf_counter()
        if kind == "clinical":
            self.clinical_failure = _clinical_stage(self.out, self.cohort, self.cfg, self.run)
            if self.clinical_failure is not None:
                return False  # reported in run.json and the report; tried again next run
        else:
            self.execute(kind, agg)
        self.ledger.mark(
            stage,
            stage_cfg,
            _stage_outputs(kind, agg, self.out, self.graph_dir),
            seconds=round(time.perf_counter() - started, 3),  # in the report's provenance
        )
        return True

    def stage_config(self, kind: str, agg: str) -> dict:
        """What a stage depends on: its part of the recorded configuration and the digests
        of the files it reads (a changed input reruns it)."""
        rec, ledger = self.record, self.ledger

        def part(*keys: str) -> dict:
            return {k: rec[k] for k in keys}

        if kind == "graphs":
            return {**part("graph", "cohort"), "modalities": self.cfg.imaging}
        if kind == "train":
            return {
                # what the stage read: the graphs as built (a rebuilt graph reruns it)
                "inputs": ledger.outputs("graphs"),
                "train": self.cfg.training_config(agg),
                **part("modalities", "seed", "folds", "repeats", "graph", "cohort"),
            }
        if kind == "evaluate":
            return {
                "inputs": ledger.outputs(f"train:{agg}"),
                **part("train", "evaluation", "models", "seed", "modalities"),
            }
        if kind == "clinical":
            return {
                "inputs": [ledger.outputs(f"train:{a}") for a in rec["aggregators"]],
                **part("clinical", "endpoint", "seed", "cohort"),
            }
        keys = ("aggregators", "models", "modalities", "evaluation", "train", "repeats")
        return {
            **part(*keys, "statistics"),
            "inputs": [ledger.outputs(f"evaluate:{a}") for a in rec["aggregators"]],
            "clinical": [ledger.outputs("clinical"), self.clinical_failure],
        }

    def execute(self, kind: str, agg: str) -> None:
        """Run a ``graphs``, ``train``, ``evaluate`` or ``report`` stage (a ``train`` stage
        with the later ones it takes along, :meth:`train_group`, which are marked finished
        with it)."""
        cfg, out = self.cfg, self.out
        if kind == "graphs":
            manifest = build_graph_stage(
                self.cohort, self.graph_dir, cfg, self.strict, self.progress, self.ex
            )
            self.run.update(graphs={"built": int(len(manifest))})
        elif kind == "train":
            group = self.train_group(agg)
            _train(group, self.cohort, self.graph_dir, cfg, out, self.progress, self.ex)
            for other in group[1:]:  # trained in this stage: its seconds count them all
                self.ledger.mark(
                    f"train:{other}",
                    self.stage_config("train", other),
                    _stage_outputs("train", other, out, self.graph_dir),
                    seconds=0.0,
                )
                self.trained_together.add(f"train:{other}")
        elif kind == "evaluate":
            from radiopath.evaluation import evaluate_run

            evaluate_run(
                out / "runs" / agg,
                models=list(cfg.models),
                backend=cfg.evaluation.backend,
                config=cfg.evaluation.protocol(),
                device=cfg.device,
                aggregator=agg,
                executor=self.ex,
            )
        else:
            _merge_tables(out, cfg.aggregators)
            from radiopath.report import write_report

            write_report(out, statistics=cfg.statistics.to_dict())


def _clinical_stage(out: Path, cohort: Cohort, cfg: BenchmarkConfig, run: RunRecord) -> str | None:
    """The optional clinical stage (:func:`radiopath.clinical.stage.write_clinical_outputs`);
    returns None, or the error of a failure. A failure is logged, recorded in ``run.json``
    (``clinical.status: failed`` with the error, shown in the report's provenance), the
    stage's earlier files are removed (the report shows no stale tables) and the
    benchmark goes on."""
    from radiopath.clinical.stage import write_clinical_outputs

    try:
        written, notes = write_clinical_outputs(
            out, cohort, cfg.aggregators, cfg.clinical, cfg.endpoint, seed=cfg.seed
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
    cohort: Cohort,
    graph_dir: Path,
    cfg: BenchmarkConfig,
    strict: bool,
    progress: bool,
    executor: Executor,
) -> pd.DataFrame:
    """The benchmark's graph stage (the sweep calls it too, to build each graph folder its
    points share once): one bag per unit on a parallel executor, else ``graph.workers``
    local processes."""
    from radiopath.graph import build_cohort_graphs

    return build_cohort_graphs(
        cohort,
        graph_dir,
        preset=cfg.graph.preset,
        workers=cfg.graph.workers,
        strict=strict,
        progress=progress,
        modalities=cfg.imaging,
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


def _check_folds_file(path: Path, cfg: BenchmarkConfig) -> None:
    """The run's folds.csv must be the folds this configuration asks for."""
    from radiopath.training.folds import read_folds

    table = read_folds(path)
    repeats = int(table["repeat"].nunique())
    per_repeat = int(table.groupby("repeat")["fold"].nunique().max())
    if repeats != cfg.repeats or per_repeat != cfg.folds:
        raise RadiopathInputError(
            f"this run's folds are {per_repeat} folds x {repeats} repeat(s), the configuration "
            f"asks for {cfg.folds} x {cfg.repeats}; use a new output folder",
            path=path,
            field="repeats" if repeats != cfg.repeats else "folds",
        )


def _train(
    aggs: Sequence[str],
    cohort: Cohort,
    graph_dir: Path,
    cfg: BenchmarkConfig,
    out: Path,
    progress: bool,
    executor: Executor,
) -> None:
    """Train (or, for a baseline, compute) aggregators on the run's shared folds. Several
    trained aggregators (joint fusion) train together: their folds are units of one
    executor map (:func:`~radiopath.training.cv.train_prepared`), so a pool's workers do
    not wait at the end of each aggregator's last fold."""
    from radiopath.training import train_cross_validated
    from radiopath.training.baselines import train_raw_mean
    from radiopath.training.cv import prepare_training, train_prepared

    folds_file = out / "folds.csv"
    if folds_file.exists():
        _check_folds_file(folds_file, cfg)
    prepared = []
    for agg in aggs:
        folds = folds_file if folds_file.exists() else None
        run_dir = out / "runs" / agg
        if agg in BASELINES:
            train_raw_mean(
                cohort,
                modalities=cfg.imaging,
                out_dir=run_dir,
                folds=folds,
                n_folds=cfg.folds,
                seed=cfg.seed,
                repeats=cfg.repeats,
                progress=progress,
            )
        else:
            options = dict(
                aggregator=cfg.trained(agg),
                modalities=list(cfg.modalities),
                out_dir=run_dir,
                config=cfg.training_config(agg),
                folds=folds,
                device=cfg.device,
                resume=True,
                progress=progress,
                repeats=cfg.repeats,
            )
            if _joint(cfg, agg):
                prepared.append(prepare_training(cohort, graph_dir, **options))
            else:
                train_cross_validated(cohort, graph_dir, executor=executor, **options)
        if not folds_file.exists():  # the first run's folds are every later run's
            write_bytes(folds_file, (run_dir / "folds.csv").read_bytes())
    if prepared:
        train_prepared(prepared, executor)
    for agg in aggs:
        run_dir, trained = out / "runs" / agg, cfg.trained(agg)
        if (run_dir / "importance" / trained).is_dir():
            _link_tree(run_dir / "importance" / trained, out / "importance" / agg)


def _joint(cfg: BenchmarkConfig, agg: str) -> bool:
    """Whether ``agg`` trains one model per fold (not a baseline, not late fusion)."""
    train = cfg.resolved_training(agg)
    return train is not None and train.fusion != "late"


def _merge_tables(out: Path, aggregators: Sequence[str]) -> None:
    """Gather every aggregator's predictions, survival functions, metrics and model selection
    into top-level tables."""
    for name in ("predictions.csv", "survival.csv", "metrics.csv", "selection.csv"):
        frames = []
        for agg in aggregators:
            path = out / "runs" / agg / name
            if not path.exists():
                raise RadiopathInputError(
                    "evaluation output is missing; run the benchmark again", path=path
                )
            frames.append(pd.read_csv(path))
        if not frames:
            continue
        merged = pd.concat(frames, ignore_index=True)
        write_csv(merged, out / name)
