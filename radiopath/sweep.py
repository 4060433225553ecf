"""Ablation sweeps: expand a grid of benchmark configurations into runs and gather their metrics.

An experiment file (YAML, see ``experiments/``)::

    name: topk-ratio
    description: SPARRA's top-k pooling ratio
    base:                      # a benchmark configuration (radiopath.benchmark.DEFAULTS keys)
      aggregators: [sparra]
      modalities: [wsi, ct]
    grid:                      # dotted keys into the configuration -> values; the product is run
      train.ratio: [0.1, 0.2, 0.5, 0.7]

Every point's :class:`~radiopath.benchmark_config.BenchmarkConfig` is built, with each of
its sub-configurations, before the first point runs (a bad key or value of any point is
refused, naming the point and the dotted key, before anything is written). The keys of an
experiment file are :class:`ExperimentConfig`'s (``docs/config-sweep.md``). Each grid
point is one benchmark run in ``OUT/<point>/`` (resumable like any benchmark); points that
share a graph configuration share one graph folder. ``OUT/sweep_metrics.csv``
gathers every point's metrics with one column per swept key,
``OUT/figures/ablation_<key>.png`` draws each metric against the swept value,
``OUT/report.html`` puts the points side by side (:mod:`radiopath.report.compare`), and
``OUT/comparisons.csv`` compares every two points that share folds, per aggregator: the
paired bootstrap difference of every study with its interval and p-value, the Wilcoxon
test over folds, both Holm-corrected over the 19 studies
(:func:`radiopath.evaluation.stats.analyse_runs`).
An experiment without ``grid`` is a single benchmark (the paper's studies are written so).

Each distinct point is one unit of the sweep's executor (``executor`` argument, or the
``executor`` key of the experiment's ``base``): on Ray the points run side by side, each a
whole benchmark inside one worker (its own stages in that worker), after the graph folders
the points share are built once, one bag per unit.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from radiopath.config import RunRecord, deep_merge, load_config_file, naming_file
from radiopath.config_rules import MAPPING, OneOf, Text
from radiopath.errors import RadiopathInputError
from radiopath.executors import Executor, ExecutorArg, borrowed
from radiopath.runkit import config_fingerprint, write_csv
from radiopath.typed_config import TypedConfig, generated_page, setting

if TYPE_CHECKING:
    from radiopath.benchmark_config import BenchmarkConfig
    from radiopath.io import Cohort

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    name: str
    description: str
    base: dict
    grid: dict[str, list]
    mode: str = "product"
    path: Path | None = None  # the file it was read from (named in its errors)

    def points(self) -> list[dict[str, object]]:
        """The grid's points (one empty point without a grid).

        ``mode: product`` runs every combination; ``mode: one_at_a_time`` varies one key at
        a time while the others keep the base configuration's values; ``mode: zip`` takes
        the i-th value of every key together (lists of one length), for settings that only
        make sense in pairs (a binary head and its horizon).
        """
        if not self.grid:
            return [{}]
        if self.mode == "one_at_a_time":
            return [{key: value} for key, values in self.grid.items() for value in values]
        if self.mode == "zip":
            keys = list(self.grid)
            return [dict(zip(keys, values)) for values in zip(*self.grid.values())]
        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]


def _mapping(value) -> dict:
    return dict(value or {})


@dataclass(frozen=True)
class ExperimentConfig(TypedConfig):
    """An experiment file: a benchmark configuration and the grid of its points."""

    name: str | None = setting(None, Text(), "The experiment's name (absent: the file's name).")
    description: str = setting("", Text(), "What the experiment asks.")
    base: dict = setting(
        None,
        MAPPING,
        "The benchmark configuration every point starts from (docs/config-benchmark.md; "
        "absent: the benchmark's defaults).",
        convert=_mapping,
    )
    grid: dict = setting(
        None,
        MAPPING,
        "Dotted keys of the benchmark configuration -> a non-empty list of values each "
        "(absent: one point, the base).",
        convert=_mapping,
    )
    mode: str = setting(
        "product",
        OneOf(("product", "one_at_a_time", "zip")),
        "product: every combination; one_at_a_time: one key varied at a time; zip: the i-th "
        "values of every key together (lists of one length).",
    )


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and check an experiment file (its keys, and each grid entry a non-empty list);
    each point's benchmark configuration is built by :func:`run_sweep`."""
    path = Path(path)
    cfg = ExperimentConfig.from_mapping(load_config_file(path), file=path).to_dict()
    mode, grid = cfg["mode"], cfg["grid"]
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise RadiopathInputError(
                f"a grid entry must be a non-empty list of values, got {values!r}",
                path=path,
                field=f"grid.{key}",
            )
    if mode == "zip" and len({len(v) for v in grid.values()}) > 1:
        raise RadiopathInputError(
            "mode zip needs lists of one length: "
            + ", ".join(f"{k} has {len(v)}" for k, v in grid.items()),
            path=path,
            field="grid",
        )
    return Experiment(
        name=cfg["name"] if cfg["name"] is not None else path.stem,
        description=cfg["description"],
        base=cfg["base"],
        grid=grid,
        mode=mode,
        path=path,
    )


def set_dotted(config: dict, key: str, value) -> dict:
    """A copy of ``config`` with ``a.b.c`` set to ``value``."""
    parts = key.split(".")
    patch: dict = {}
    node = patch
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    merged = deep_merge(config, patch)
    if value is None:  # deep_merge skips None; an explicit None in a grid means "unset"
        node = merged
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = None
    return merged


def point_name(point: dict[str, object]) -> str:
    if not point:
        return "run"
    text = "__".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9=_.,+-]", "-", text)


def run_sweep(
    experiment: str | os.PathLike | Experiment,
    cohort_csv: str | os.PathLike | Cohort,
    out_dir: str | os.PathLike,
    *,
    overrides: dict | None = None,
    progress: bool = True,
    executor: ExecutorArg = None,
) -> pd.DataFrame:
    """Run every point of an experiment and return the gathered metrics.

    ``executor`` runs the points (default: the base configuration's ``executor``, local).
    """
    from radiopath.benchmark import DEFAULTS
    from radiopath.io import Cohort, read_cohort

    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    out = Path(out_dir)
    base = deep_merge(deep_merge(DEFAULTS, exp.base), overrides or {})
    spec = executor if executor is not None else base.get("executor")
    base["executor"] = "local"  # inside a point, its stages run where the point runs
    # every point is built and checked before the first one runs (or anything is written)
    cohort = cohort_csv if isinstance(cohort_csv, Cohort) else read_cohort(cohort_csv)
    points = [(point, point_name(point), _point_config(base, point, out)) for point in exp.points()]
    built = {}  # point name -> its BenchmarkConfig
    for point, name, cfg in points:
        # an error about a key the experiment file sets (base or grid) names the file
        with naming_file(exp.path, _with_point(exp.base, point), overrides=overrides):
            built[name] = _build_point(name, cfg, cohort)
    frames = []
    with (
        borrowed(spec) as ex,
        RunRecord(
            out,
            command="sweep",
            config={"experiment": exp.__dict__, "base": base},
            seed=base.get("seed"),
        ),
    ):
        unique: dict[str, tuple[str, dict]] = {}  # resolved-config hash -> first point
        for _, name, cfg in points:
            unique.setdefault(config_fingerprint(cfg), (name, cfg))
        finished = _run_points(cohort_csv, cohort, out, list(unique.values()), built, ex, progress)
        run_dirs: dict[str, Path] = {}  # point -> its run directory (repeated points: none)
        for point, name, cfg in points:
            first = unique[config_fingerprint(cfg)][0]
            if first != name:  # e.g. each key's default in one_at_a_time mode
                log.info("sweep %s: point %s repeats point %s; reused", exp.name, name, first)
            else:
                run_dirs[name] = out / name
            metrics = finished[first].copy()
            metrics.insert(0, "point", name)
            for key, value in point.items():
                if key not in metrics.columns:  # e.g. "modalities" is already a column
                    metrics[key] = str(value) if isinstance(value, (list, dict)) else value
            frames.append(metrics)
    gathered = pd.concat(frames, ignore_index=True)
    write_csv(gathered, out / "sweep_metrics.csv")
    if len(run_dirs) >= 2:
        from radiopath.evaluation.stats import analyse_runs

        comparisons = analyse_runs(run_dirs, base.get("statistics"))
        if not comparisons.empty:
            write_csv(comparisons, out / "comparisons.csv")
    for key in exp.grid:
        plot_ablation(gathered, key, out / "figures" / f"ablation_{key.replace('.', '_')}.png")
    if len(run_dirs) >= 2:
        from radiopath.report.compare import write_comparison

        alpha = (base.get("statistics") or {}).get("alpha") or 0.05
        write_comparison(sweep=out, alpha=alpha)
    return gathered


def run_point(cohort, out_dir: Path, cfg: dict, progress: bool) -> pd.DataFrame:
    """One sweep point: a whole benchmark (one executor unit); its metrics."""
    from radiopath.benchmark import run_benchmark

    return run_benchmark(cohort, out_dir, cfg, progress=progress).metrics


def _run_points(
    cohort_csv,
    cohort,
    out: Path,
    points,
    built: Mapping[str, BenchmarkConfig],
    ex: Executor,
    progress,
) -> dict:
    """Run the distinct ``points`` (name, configuration) on ``ex``; ``{point name: metrics}``.
    On a parallel executor the graph folders are built first (each once, one bag per unit,
    from the point's built configuration), so that points sharing one never build it side
    by side."""
    from radiopath.benchmark import build_graph_stage

    if ex.remote:
        graph_dirs = set()
        for name, _ in points:
            cfg = built[name]
            graph_dir = cfg.graph.dir or str(out / name / "graphs")
            if graph_dir not in graph_dirs:
                graph_dirs.add(graph_dir)
                build_graph_stage(cohort, Path(graph_dir), cfg, False, progress, ex)
    tasks = [(cohort_csv, out / name, cfg, progress and not ex.remote) for name, cfg in points]
    finished = {}
    with tqdm(total=len(tasks), desc="sweep", unit="point", disable=not progress) as bar:
        for done in ex.map_unordered(run_point, tasks):
            name = points[done.index][0]
            finished[name] = done.result()
            log.info("sweep point %s finished", name)
            bar.update()
    return finished


def _point_config(base: dict, point: dict[str, object], out: Path) -> dict:
    """The benchmark configuration of one grid point (its graphs in a folder per graph
    configuration, shared by the points that agree on it)."""
    cfg = _with_point(base, point)
    if isinstance(cfg.get("graph"), dict):
        cfg["graph"]["dir"] = str(out / "graphs" / config_fingerprint(cfg["graph"]))
    return cfg


def _with_point(base: dict, point: dict[str, object]) -> dict:
    """``base`` with every dotted key of ``point`` set."""
    cfg = copy.deepcopy(base)
    for key, value in point.items():
        cfg = set_dotted(cfg, key, value)
    return cfg


def _build_point(name: str, cfg: dict, cohort: Cohort) -> BenchmarkConfig:
    """The point's :class:`~radiopath.benchmark_config.BenchmarkConfig`, every section built
    and checked as the benchmark does; an error names the point."""
    from radiopath.benchmark_config import build_benchmark_config

    try:
        return build_benchmark_config(cfg, cohort)
    except RadiopathInputError as exc:
        raise RadiopathInputError(
            f"sweep point {name}: {exc.reason}", path=exc.path, field=exc.field
        ) from exc


def plot_ablation(metrics: pd.DataFrame, key: str, path: Path) -> Path:
    """Each metric (mean over folds and models, with the sd over folds) against a swept value."""
    names = [m for m in ("c_index", "c_ipcw", "c_auc", "ibs") if m in set(metrics.metric)]
    fig = Figure(figsize=(4 * len(names), 3.5))
    axes = fig.subplots(1, len(names), squeeze=False)
    metrics = metrics[metrics[key].notna()]
    values = list(dict.fromkeys(metrics[key].astype(str)))
    for ax, metric in zip(axes[0], names):
        sub = metrics[(metrics.metric == metric) & metrics.value.notna()]
        for agg, part in sub.groupby("aggregator"):
            per_fold = part.groupby([part[key].astype(str), "fold"]).value.mean()
            stats = per_fold.groupby(level=0).agg(["mean", "std"]).reindex(values)
            ax.errorbar(
                range(len(values)),
                stats["mean"],
                yerr=stats["std"].fillna(0),
                marker="o",
                capsize=3,
                label=agg,
            )
        ax.set_xticks(range(len(values)), values, rotation=30)
        ax.set_xlabel(key)
        ax.set_title(metric)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def reference_page() -> str:
    """``docs/config-sweep.md``: every key of an experiment file (:class:`ExperimentConfig`),
    generated from its declarations (``tests/test_sweep.py`` keeps the page equal)."""
    return generated_page(
        ExperimentConfig,
        "",
        title="Experiment (sweep) files",
        page="docs/config-sweep.md",
        intro=(
            "The file of `radiopath sweep --experiment` (see `experiments/`). A wrong key or value "
            "is refused by its dotted name when the file is read; then every point's benchmark "
            "configuration (docs/config-benchmark.md) is built, each grid key a dotted key of it, "
            "before the first point runs."
        ),
    )
