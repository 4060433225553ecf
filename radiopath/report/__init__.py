"""Tables and figures of a finished run: ``summary.md``, PNG figures and one HTML page.

Works on a benchmark directory (several aggregators) or a single training run that has
been evaluated: everything is recomputed from ``metrics.csv`` (and ``predictions.csv``,
``survival.csv`` and ``folds.csv`` for the risk-group curves, the calibration, the bootstrap
intervals and the paired comparisons, written to ``intervals.csv`` and ``comparisons.csv``),
so the report always agrees with the numbers on disk.

``report.html`` is one self-contained page rendered from the Jinja2 templates in
``templates/``: the studies as sortable HTML tables with intervals and significance marks
(:mod:`.tables`), every figure (:mod:`radiopath.viz.report_plots`), an importance gallery
(:mod:`.gallery`) and the run's provenance (:mod:`.provenance`). Several runs or the points
of a sweep are put side by side by :func:`radiopath.report.compare.write_comparison`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from radiopath import __version__
from radiopath.evaluation.protocol import PREDICTION_COLUMNS
from radiopath.evaluation.report import (
    MODEL_LABELS,
    SURVIVAL_COLUMNS,
    fold_statistics,
    summarize,
)
from radiopath.evaluation.stats import Analysis, analyse_run
from radiopath.report.clinical import clinical_markdown, read_clinical_section
from radiopath.report.fusion import fusion_markdown, read_fusion_weights
from radiopath.report.gallery import build_gallery, colour_stops
from radiopath.report.page import Figure, figure, render
from radiopath.report.provenance import read_provenance
from radiopath.report.tables import failed_fits, read_metrics, read_table, study_tables
from radiopath.runkit import write_csv, write_text
from radiopath.viz.report_plots import (
    METRIC_LABELS,
    calibration_table,
    default_horizon,
    plot_calibration,
    plot_comparisons,
    plot_fold_spread,
    plot_metric_panels,
    plot_risk_groups,
)

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_LABELS",
    "fold_statistics",
    "plot_comparisons",
    "plot_metric_panels",
    "plot_risk_groups",
    "read_metrics",
    "write_report",
]

GALLERY_NOTE = (
    "The highest-, median- and lowest-risk test patients of each fold (of the first repeat)."
)


def _recorded(run_dir: Path) -> dict:
    """The configuration the run was started with (run.json), if any."""
    path = run_dir / "run.json"
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()).get("config") or {})
    except (json.JSONDecodeError, TypeError, ValueError):
        return {}


def _recorded_statistics(run_dir: Path) -> dict:
    """The ``statistics`` section the run was started with (run.json), if any."""
    section = _recorded(run_dir).get("statistics")
    return dict(section) if isinstance(section, dict) else {}


def _recorded_horizon(run_dir: Path) -> float | None:
    """The first fixed horizon of the run's evaluation configuration, if it named one."""
    evaluation = _recorded(run_dir).get("evaluation") or {}
    horizons = (evaluation.get("metrics") or {}).get("horizons") or []
    if isinstance(horizons, (int, float)):
        horizons = [horizons]
    return float(horizons[0]) if horizons else None


def _design(analysis: Analysis) -> str:
    cfg = analysis.config
    folds = analysis.n_folds // max(analysis.n_repeats, 1)
    return (
        f"{analysis.n_patients} patients, {folds} folds x {analysis.n_repeats} repeat(s) = "
        f"{analysis.n_folds} test folds; intervals and paired tests: {cfg.bootstrap} "
        f"patient-level bootstrap replicates of the out-of-fold predictions (stratified by "
        f"event, seed {cfg.seed}), alpha = {cfg.alpha:g}."
    )


NEEDED = {
    "predictions.csv": PREDICTION_COLUMNS,
    "selection.csv": ["aggregator", "modalities", "model", "fold", "train_risk_mean"],
    "survival.csv": SURVIVAL_COLUMNS,
}


def _read_optional(path: Path) -> pd.DataFrame | None:
    """A run's table, checked for the columns the report reads; None when it is absent."""
    return read_table(path, NEEDED.get(path.name, ())) if path.exists() else None


def _calibration_figure(run_dir, predictions, horizon) -> Figure | None:
    survival = _read_optional(run_dir / "survival.csv")
    if survival is None or survival.empty:
        return None
    horizon = horizon or _recorded_horizon(run_dir) or default_horizon(predictions, survival)
    table = calibration_table(predictions, survival, horizon)
    if table.empty:
        log.warning("%s: no survival at t = %g; no calibration plot", run_dir, horizon)
        return None
    write_csv(table, run_dir / "calibration.csv")
    path = plot_calibration(table, horizon, run_dir / "figures" / "calibration.png")
    caption = (
        f"predicted probability of an event by t = {horizon:g} against the Kaplan-Meier "
        "estimate, test patients in equal groups by prediction (calibration.csv)"
    )
    return figure(path, run_dir, f"Calibration at t = {horizon:g}", caption)


def _figures(run_dir, metrics, analysis, predictions, horizon) -> list[Figure]:
    """Draw every figure of the run into ``figures/`` and return them for the page."""
    folder = run_dir / "figures"
    figs = [
        figure(
            plot_metric_panels(metrics, folder / "metrics.png"),
            run_dir,
            "Metrics per model",
            "mean over outer folds, error bars: sd over folds",
        ),
        figure(
            plot_fold_spread(metrics, folder / "fold_spread.png"),
            run_dir,
            "Per-fold spread",
            "each outer fold's value, averaged over the downstream models",
        ),
    ]
    if analysis is not None and not analysis.comparisons.empty:
        path = plot_comparisons(
            analysis.comparisons, folder / "comparisons.png", analysis.config.alpha
        )
        figs.append(figure(path, run_dir, "Paired differences between aggregators (forest plot)"))
    selection = _read_optional(run_dir / "selection.csv")
    if predictions is not None and selection is not None:
        calibration = _calibration_figure(run_dir, predictions, horizon)
        figs += [calibration] if calibration is not None else []
        for model in dict.fromkeys(predictions.model):
            path = plot_risk_groups(predictions, selection, folder / f"km_{model}.png", model)
            figs.append(
                figure(
                    path,
                    run_dir,
                    f"Kaplan-Meier risk groups, {MODEL_LABELS.get(model, model)}",
                    "test patients split at their fold's mean training risk, pooled over "
                    "folds; numbers at risk beneath",
                )
            )
    for path in sorted(folder.glob("ablation_*.png")):
        figs.append(figure(path, run_dir, f"Ablation: {path.stem.removeprefix('ablation_')}"))
    return figs


def _statistics(run_dir: Path, statistics: dict | None) -> Analysis | None:
    if not (run_dir / "predictions.csv").exists():
        log.warning("%s has no predictions.csv: no intervals or paired tests", run_dir)
        return None
    settings = {**_recorded_statistics(run_dir), **(statistics or {})}
    analysis = analyse_run(run_dir, settings)
    write_csv(analysis.intervals, run_dir / "intervals.csv")
    write_csv(analysis.comparisons, run_dir / "comparisons.csv")
    return analysis


def write_report(
    run_dir: str | os.PathLike,
    *,
    statistics: dict | None = None,
    reference: str | None = None,
    patients: list[str] | None = None,
    horizon: float | None = None,
) -> dict[str, Path]:
    """Write ``summary.md``, ``intervals.csv``, ``comparisons.csv``, ``figures/*.png`` and
    ``report.html`` for a run directory.

    Parameters
    ----------
    statistics
        Overrides of the run's ``statistics`` section (``bootstrap``, ``alpha``, ``seed``;
        :data:`radiopath.evaluation.stats.DEFAULT_STATISTICS`).
    reference
        A shipped published table (e.g. ``"sparra-table1"``): ``reference.md`` gets the
        run's means beside it, and the HTML page shows it.
    patients
        The importance gallery's patients (default: the highest-, median- and lowest-risk
        test patients of each fold).
    horizon
        The time of the calibration plot (default: the run's first fixed horizon, else the
        cohort's median event time).
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    analysis = _statistics(run_dir, statistics)
    written: dict[str, Path] = {}
    if analysis is not None:
        written.update(intervals=run_dir / "intervals.csv", comparisons=run_dir / "comparisons.csv")
    alpha = 0.05 if analysis is None else analysis.config.alpha
    design = None if analysis is None else _design(analysis)
    intervals = None if analysis is None else analysis.intervals
    comparisons = None if analysis is None else analysis.comparisons
    summary = summarize(metrics, intervals, comparisons, alpha=alpha, design=design)
    clinical = read_clinical_section(run_dir)
    if not clinical.empty:
        summary = summary.rstrip("\n") + "\n\n" + clinical_markdown(clinical)
    fusion = read_fusion_weights(run_dir)
    if fusion:
        summary = summary.rstrip("\n") + "\n\n" + fusion_markdown(fusion)
    write_text(run_dir / "summary.md", summary)
    extra = None
    if reference is not None:
        from radiopath.reference import beside_reference

        extra = beside_reference(metrics, reference)
        write_text(run_dir / "reference.md", extra)
        written["reference"] = run_dir / "reference.md"
    predictions = _read_optional(run_dir / "predictions.csv")
    aggregators = list(dict.fromkeys(metrics["aggregator"].astype(str)))
    page = render(
        "report.html.j2",
        run_dir / "report.html",
        title=f"radiopath report: {run_dir.resolve().name}",
        version=__version__,
        tables=study_tables(metrics, intervals, comparisons, alpha),
        tested=analysis is not None,
        alpha=alpha,
        design=design,
        reference=extra,
        clinical=clinical,
        fusion=fusion,
        figures=_figures(run_dir, metrics, analysis, predictions, horizon),
        gallery=[]
        if predictions is None
        else build_gallery(run_dir, predictions, aggregators, patients),
        gallery_note="The patients named." if patients else GALLERY_NOTE,
        colour_bar=colour_stops(),
        provenance=read_provenance(run_dir),
        failures=failed_fits(metrics, _read_optional(run_dir / "selection.csv")),
    )
    return {
        "summary": run_dir / "summary.md",
        "html": page,
        "figures": run_dir / "figures",
        **written,
    }
