"""Several runs side by side: ``radiopath report --runs A B ...`` and the page of a sweep.

The page has one row per run, aggregator and modality set with the average over the
downstream models of each metric (the ``Avg.`` column of a run's own table), the best of
each metric over all rows marked; the configuration keys whose values differ between the
runs; the metrics against the runs and the per-fold spread of every run; for a sweep its
ablation curves and the paired tests between points (``comparisons.csv`` of
:func:`radiopath.evaluation.stats.analyse_runs`); and a link to each run's own page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath import __version__
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import METRICS, lower_is_better
from radiopath.evaluation.tables import METRIC_LABELS, _with_average, fold_statistics
from radiopath.report.page import figure, render
from radiopath.report.provenance import flatten
from radiopath.report.tables import Cell, read_metrics
from radiopath.runkit import read_json
from radiopath.viz.report_plots import plot_fold_spread

MISSING = "(not set)"


def is_sweep(path: str | os.PathLike) -> bool:
    """Whether a folder is a sweep's output (it has ``sweep_metrics.csv``)."""
    return (Path(path) / "sweep_metrics.csv").exists()


def sweep_points(sweep_dir: str | os.PathLike) -> dict[str, Path]:
    """The run folders of a sweep's points in the sweep's order (a point that repeated an
    earlier one has no folder of its own and is left out)."""
    sweep_dir = Path(sweep_dir)
    gathered = pd.read_csv(sweep_dir / "sweep_metrics.csv", usecols=["point"], dtype=str)
    points = {}
    for name in dict.fromkeys(gathered["point"]):
        if (sweep_dir / name / "metrics.csv").exists():
            points[name] = sweep_dir / name
    return points


def run_names(paths: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """A short unique name per run folder: its name, or its path below the common parent
    when two folders share a name."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not (p / "metrics.csv").exists():
            raise RadiopathInputError(
                "no metrics.csv: not a finished run (radiopath evaluate / benchmark)",
                path=p / "metrics.csv",
            )
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        common = Path(os.path.commonpath([p.resolve() for p in paths]))
        names = [p.resolve().relative_to(common).as_posix() or p.name for p in paths]
    if len(set(names)) < len(names):
        raise RadiopathInputError(f"the same run is given twice: {sorted(names)}", field="runs")
    return dict(zip(names, paths))


def _display(value) -> str:
    return MISSING if value is None else json.dumps(value, default=str)


def config_differences(configs: Mapping[str, Mapping]) -> list[dict]:
    """The configuration keys (dotted) whose values differ between runs.

    Returns one ``{"key": ..., "by_run": [values, in the order of the runs]}`` per differing key; a key
    a run does not have shows as ``(not set)``.
    """
    flat = {name: flatten(cfg) for name, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    rows = []
    for key in keys:
        values = [_display(f.get(key)) for f in flat.values()]
        if len(set(values)) > 1:
            rows.append({"key": key, "by_run": values})
    return rows


def gather_metrics(runs: Mapping[str, Path]) -> pd.DataFrame:
    """Every run's ``metrics.csv`` with a ``run`` column."""
    frames = [read_metrics(path).assign(run=name) for name, path in runs.items()]
    return pd.concat(frames, ignore_index=True)


def summary_rows(metrics: pd.DataFrame) -> list[dict]:
    """One row per run, aggregator and modality set: the average over models of each metric
    (mean over folds of each model, then over models), the best of each metric marked."""
    rows = []
    for run, part in metrics.groupby("run", sort=False):
        stats = _with_average(fold_statistics(part))
        avg = stats[stats["model"] == "avg"]
        for (mods, agg), sub in avg.groupby(["modalities", "aggregator"], sort=False):
            look = {r["metric"]: r for r in sub.to_dict("records")}
            cells = {}
            for k in METRICS:
                r = look.get(k)
                cells[k] = Cell(
                    mean=float(r["mean"]) if r is not None else None,
                    sd=float(r["sd"]) if r is not None and np.isfinite(r["sd"]) else None,
                    n_valid=int(r["n_valid"]) if r is not None else 0,
                    n_folds=int(r["n_folds"]) if r is not None else 0,
                )
            rows.append({"run": run, "aggregator": agg, "modalities": mods, "cells": cells})
    for k in METRICS:
        values = [r["cells"][k].mean for r in rows if r["cells"][k].mean is not None]
        if len(values) < 2:
            continue
        target = min(values) if lower_is_better(k) else max(values)
        for r in rows:
            r["cells"][k].best = r["cells"][k].mean is not None and np.isclose(
                r["cells"][k].mean, target, rtol=0, atol=1e-12
            )
    return rows


def point_differences(comparisons: pd.DataFrame, alpha: float) -> list[dict]:
    """Paired tests between sweep points, averaged over models: one row per pair of points
    and aggregator, one cell per metric (delta, interval, Holm-adjusted p)."""
    need = {"point_a", "point_b", "aggregator", "model", "metric", "delta", "p_holm"}
    if comparisons.empty or not need <= set(comparisons.columns):
        return []
    avg = comparisons[(comparisons["model"] == "avg") & comparisons["metric"].isin(METRICS)]
    rows = []
    for (a, b, agg), part in avg.groupby(["point_a", "point_b", "aggregator"], sort=False):
        look = {r["metric"]: r for r in part.to_dict("records")}
        cells = {}
        for k in METRICS:
            r = look.get(k)
            if r is None or not np.isfinite(r["delta"]):
                cells[k] = None
                continue
            cells[k] = {
                "delta": float(r["delta"]),
                "ci_low": float(r["ci_low"]),
                "ci_high": float(r["ci_high"]),
                "p_holm": float(r["p_holm"]),
                "significant": bool(np.isfinite(r["p_holm"]) and r["p_holm"] < alpha),
            }
        rows.append({"pair": f"{a} - {b}", "aggregator": agg, "cells": cells})
    return rows


def _run_info(name: str, path: Path, out_dir: Path) -> dict:
    record = read_json(path / "run.json", default={}) or {}
    page = path / "report.html"
    return {
        "name": name,
        "path": str(path),
        "link": Path(os.path.relpath(page, out_dir)).as_posix() if page.exists() else None,
        "status": record.get("status"),
        "finished": record.get("finished"),
        "git_commit": (record.get("git_commit") or "")[:12] or None,
        "config": record.get("config") or {},
    }


def _figures(metrics: pd.DataFrame, out_dir: Path, sweep: bool) -> list:
    from radiopath.sweep import plot_ablation

    folder = out_dir / "figures"
    figs = []
    if not sweep:
        path = plot_ablation(metrics, "run", folder / "runs.png")
        figs.append(figure(path, out_dir, "Metrics per run", "mean over folds and models, sd"))
    labelled = metrics.assign(group=metrics["run"] + " | " + metrics["aggregator"].astype(str))
    path = plot_fold_spread(labelled, folder / "fold_spread_runs.png", by="group")
    figs.append(figure(path, out_dir, "Per-fold spread of every run and aggregator"))
    for path in sorted(folder.glob("ablation_*.png")) if sweep else []:
        figs.append(figure(path, out_dir, f"Ablation: {path.stem.removeprefix('ablation_')}"))
    return figs


def write_comparison(
    runs: Sequence[str | os.PathLike] | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    sweep: str | os.PathLike | None = None,
    alpha: float = 0.05,
) -> Path:
    """Write ``report.html`` (and its figures) putting several runs side by side.

    Parameters
    ----------
    runs
        Run folders (each with ``metrics.csv``); or None with ``sweep``.
    out_dir
        Where the page goes (default: the sweep folder).
    sweep
        A sweep folder: its points are the runs, its ``comparisons.csv`` and ablation
        curves are shown, and the page is ``<sweep>/report.html``.
    alpha
        Level at which a paired difference between sweep points is marked.
    """
    if sweep is not None:
        named = sweep_points(sweep)
        out = Path(out_dir or sweep)
    else:
        if not runs or len(runs) < 2:
            raise RadiopathInputError("give at least two run folders to compare", field="runs")
        if out_dir is None:
            raise RadiopathInputError("give --out DIR for the page of several runs", field="out")
        named, out = run_names(runs), Path(out_dir)
    if len(named) < 2:
        raise RadiopathInputError("fewer than two finished runs to compare", path=sweep)
    metrics = gather_metrics(named)
    infos = [_run_info(name, path, out) for name, path in named.items()]
    pairs = pd.DataFrame()
    if sweep is not None and (Path(sweep) / "comparisons.csv").exists():
        pairs = pd.read_csv(Path(sweep) / "comparisons.csv")
    return render(
        "compare.html.j2",
        out / "report.html",
        title=f"radiopath comparison: {Path(sweep).resolve().name if sweep else out.name}",
        version=__version__,
        runs=infos,
        metric_names=list(METRICS),
        metric_labels=[METRIC_LABELS[k] for k in METRICS],
        rows=summary_rows(metrics),
        differences=config_differences({i["name"]: i["config"] for i in infos}),
        point_differences=point_differences(pairs, alpha),
        alpha=alpha,
        figures=_figures(metrics, out, sweep is not None),
    )
