"""The benchmark: graphs -> each aggregator trained on the same folds -> downstream evaluation -> report.

One run directory holds the whole comparison::

    OUT/run.json             resolved config, seed, versions, git commit, times
    OUT/graphs/              graphs of every patient and modality (+ manifest.csv)
    OUT/folds.csv            the outer folds, shared by every aggregator
    OUT/runs/<aggregator>/   one training run per aggregator (embeddings, logs, risks, ...)
    OUT/predictions.csv      test-fold predictions of every aggregator and model
    OUT/metrics.csv          every metric of every fold
    OUT/selection.csv        hyper-parameters chosen per fold, and training-risk thresholds
    OUT/importance/<aggregator>/<patient_id>.<modality>.csv
    OUT/summary.md, OUT/figures/, OUT/report.html

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from radiopath.config import RunRecord, load_config_file, resolve_config
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import BACKENDS as KNOWN_BACKENDS
from radiopath.evaluation.config import MODELS as KNOWN_MODELS
from radiopath.io import Cohort, read_cohort

log = logging.getLogger(__name__)


DEFAULTS: dict = {
    "seed": 0,
    "folds": 5,
    "aggregators": ["sparra", "abmil", "mean"],
    "models": list(KNOWN_MODELS),
    "modalities": ["wsi", "ct"],
    "device": "auto",
    "graph": {"preset": None, "workers": 1, "dir": None},
    "train": {},
    "evaluation": {"backend": "sksurv"},
}


def known_aggregators() -> tuple[str, ...]:
    from radiopath.models import AGGREGATORS

    return tuple(AGGREGATORS)


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
    """Remembers which stages finished with which configuration (``stages.json``)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / "stages.json"
        self.done: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def finished(self, name: str, config) -> bool:
        return self.done.get(name) == _hash(config)

    def mark(self, name: str, config) -> None:
        self.done[name] = _hash(config)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done, indent=2))
        os.replace(tmp, self.path)


def validate_benchmark_config(cfg: dict, cohort: Cohort) -> None:
    """Refuse bad flags before any work starts, naming the flag and the bad value."""
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
    if n_events < k:
        raise RadiopathInputError(
            f"{n_events} events cannot be spread over {k} folds; use fewer folds",
            path=cohort.path,
            field="folds",
        )


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
    """
    from radiopath.evaluation import evaluate_run, summarize
    from radiopath.graph import build_cohort_graphs
    from radiopath.training import train_cross_validated

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
    stages.append("report")

    with RunRecord(out, command="benchmark", config=cfg, seed=cfg["seed"]) as run:
        if cohort.problems:
            run.update(skipped=[str(p) for p in cohort.problems])
        ledger = StageLedger(out)
        bar = tqdm(stages, desc="benchmark", unit="stage", disable=not progress)
        graph_dir = Path(cfg["graph"]["dir"]) if cfg["graph"].get("dir") else out / "graphs"
        for stage in bar:
            bar.set_postfix_str(stage)
            kind, _, agg = stage.partition(":")
            if kind == "graphs":
                stage_cfg = {"graph": cfg["graph"], "modalities": imaging, "cohort": cfg["cohort"]}
            elif kind == "train":
                stage_cfg = {
                    "train": cfg["train"],
                    "modalities": cfg["modalities"],
                    "seed": cfg["seed"],
                    "folds": cfg["folds"],
                    "graph": cfg["graph"],
                    "cohort": cfg["cohort"],
                }
            elif kind == "evaluate":
                stage_cfg = {
                    "train": cfg["train"],
                    "evaluation": cfg["evaluation"],
                    "models": cfg["models"],
                    "seed": cfg["seed"],
                    "modalities": cfg["modalities"],
                }
            else:
                stage_cfg = {
                    k: cfg[k]
                    for k in ("aggregators", "models", "modalities", "evaluation", "train")
                }
            if ledger.finished(stage, stage_cfg):
                log.info("stage %s already finished; skipped", stage)
                continue
            if kind == "graphs":
                manifest = build_cohort_graphs(
                    cohort,
                    graph_dir,
                    preset=cfg["graph"].get("preset"),
                    workers=cfg["graph"].get("workers", 1),
                    strict=strict,
                    progress=progress,
                    modalities=imaging,
                )
                run.update(graphs={"built": int(len(manifest))})
            elif kind == "train":
                folds_file = out / "folds.csv"
                train_cross_validated(
                    cohort,
                    graph_dir,
                    aggregator=agg,
                    modalities=cfg["modalities"],
                    out_dir=out / "runs" / agg,
                    config={
                        **copy.deepcopy(cfg["train"]),
                        "seed": cfg["seed"],
                        "n_folds": cfg["folds"],
                    },
                    folds=folds_file if folds_file.exists() else None,
                    device=cfg["device"],
                    resume=True,
                    progress=progress,
                )
                if not folds_file.exists():
                    shutil.copy2(out / "runs" / agg / "folds.csv", folds_file)
                _link_tree(out / "runs" / agg / "importance", out / "importance")
            elif kind == "evaluate":
                evaluate_run(
                    out / "runs" / agg,
                    models=cfg["models"],
                    backend=cfg["evaluation"].get("backend", "sksurv"),
                    config={k: v for k, v in cfg["evaluation"].items() if k != "backend"},
                    device=cfg["device"],
                )
            else:
                _merge_tables(out, cfg["aggregators"])
                from radiopath.report import write_report

                write_report(out)
            ledger.mark(stage, stage_cfg)
            if stage_hook is not None:
                stage_hook(stage)
        metrics = pd.read_csv(out / "metrics.csv")
        predictions = pd.read_csv(out / "predictions.csv")
        summary = summarize(metrics)
        run.update(
            result={
                "metrics": "metrics.csv",
                "predictions": "predictions.csv",
                "summary": "summary.md",
            }
        )
    return BenchmarkResult(out, metrics, predictions, summary)


def _merge_tables(out: Path, aggregators: Sequence[str]) -> None:
    """Gather every aggregator's predictions, metrics and model selection into top-level tables."""
    for name in ("predictions.csv", "metrics.csv", "selection.csv"):
        frames = []
        for agg in aggregators:
            path = out / "runs" / agg / name
            if not path.exists():
                raise RadiopathInputError(
                    "evaluation output is missing; run the benchmark again", path=path
                )
            frames.append(pd.read_csv(path))
        merged = pd.concat(frames, ignore_index=True)
        tmp = out / f".{name}.tmp"
        merged.to_csv(tmp, index=False)
        os.replace(tmp, out / name)
