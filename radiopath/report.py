"""Tables and figures of a finished run: ``summary.md``, PNG figures and one HTML page.

Works on a benchmark directory (several aggregators) or a single training run that has
been evaluated: everything is recomputed from ``metrics.csv`` (and ``predictions.csv``,
``survival.csv`` and ``folds.csv`` for the risk-group curves, the bootstrap intervals and
the paired comparisons, written to ``intervals.csv`` and ``comparisons.csv``), so the report
always agrees with the numbers on disk.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import lower_is_better
from radiopath.evaluation.report import (
    MODEL_LABELS,
    _metric_label,
    fold_statistics,
    pooled_risk_groups,
    summarize,
)
from radiopath.evaluation.stats import Analysis, analyse_run
from radiopath.runkit import atomic_path, write_csv, write_text

log = logging.getLogger(__name__)

METRIC_LABELS = {
    "c_index": "C-index (Harrell)",
    "c_ipcw": "C-IPCW (Uno)",
    "c_auc": "mean cumulative/dynamic AUC",
    "ibs": "integrated Brier score (lower is better)",
}


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise RadiopathInputError(
            "no metrics.csv: evaluate the run first (radiopath evaluate / benchmark)", path=path
        )
    metrics = pd.read_csv(path)
    need = {"aggregator", "modalities", "model", "fold", "metric", "value"}
    if not need <= set(metrics.columns):
        raise RadiopathInputError(
            f"missing columns {sorted(need - set(metrics.columns))}", path=path
        )
    return metrics


def _panels(n: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` panels side by side (object API: no pyplot state, no backend)."""
    fig = Figure(figsize=(width * n, height))
    return fig, fig.subplots(1, n, squeeze=False)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def plot_metric_panels(metrics: pd.DataFrame, path: Path) -> Path:
    """One panel per metric: bars per model, grouped by aggregator, error bars = sd over folds."""
    stats = fold_statistics(metrics)
    names = [m for m in METRIC_LABELS if m in set(stats.metric)]
    stats = stats.assign(study=stats.aggregator + " | " + stats.modalities)
    studies = list(dict.fromkeys(stats.study))
    models = list(dict.fromkeys(stats.model))
    fig, axes = _panels(len(names), 4.2, 4)
    width = 0.8 / max(len(studies), 1)
    for ax, metric in zip(axes[0], names):
        sub = stats[stats.metric == metric]
        for i, study in enumerate(studies):
            rows = sub[sub.study == study].set_index("model").reindex(models)
            x = np.arange(len(models)) + (i - (len(studies) - 1) / 2) * width
            ax.bar(x, rows["mean"], width, yerr=rows["sd"].fillna(0), capsize=2, label=study)
        ax.set_xticks(np.arange(len(models)), models, rotation=30)
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
        if metric != "ibs":
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
            ax.set_ylim(0.3, 1.0)
    axes[0][0].legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_risk_groups(
    predictions: pd.DataFrame, selection: pd.DataFrame, path: Path, model: str
) -> Path:
    """Kaplan-Meier curves of high/low test risk for each aggregator and one model.

    Each fold's test patients are split at the mean risk of that fold's *training*
    patients (the paper's rule; :func:`radiopath.evaluation.report.pooled_risk_groups`)
    and the folds are pooled; the log-rank p-value is lifelines'.
    """
    preds = predictions[predictions.model == model]
    aggs = list(dict.fromkeys(preds.aggregator))
    fig, axes = _panels(len(aggs), 4.6, 4)
    for ax, agg in zip(axes[0], aggs):
        groups = pooled_risk_groups(preds[preds.aggregator == agg], selection, "mean")
        groups.plot(ax=ax, title=f"{agg} / {model}")
    return _save(fig, path)


def _embed_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def plot_comparisons(comparisons: pd.DataFrame, path: Path, alpha: float = 0.05) -> Path:
    """Forest plot: every paired difference of the 19 studies with its bootstrap interval."""
    main = comparisons[comparisons["family"] == "studies"]
    pairs = list(dict.fromkeys(zip(main["aggregator_a"], main["aggregator_b"], main["modalities"])))
    studies = list(dict.fromkeys(zip(main["model"], main["metric"])))
    fig, axes = _panels(len(pairs), 4.2, 0.32 * len(studies) + 1.4)
    for ax, (a, b, mods) in zip(axes[0], pairs):
        sub = main[(main.aggregator_a == a) & (main.aggregator_b == b) & (main.modalities == mods)]
        look = {(r.model, r.metric): r for r in sub.itertuples(index=False)}
        for y, key in enumerate(studies):
            r = look.get(key)
            if r is None or not np.isfinite(r.delta):
                continue
            # oriented so that right of 0 favours a, whatever the metric's direction
            sign = -1.0 if lower_is_better(r.metric) else 1.0
            lo, hi = sorted((sign * r.ci_low, sign * r.ci_high))
            color = "tab:red" if r.p_holm < alpha else "tab:grey"
            ax.plot([lo, hi], [y, y], color=color, lw=1.5)
            ax.plot([sign * r.delta], [y], "o", color=color, ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(
            range(len(studies)),
            [f"{MODEL_LABELS.get(m, m)} {_metric_label(k)}" for m, k in studies],
            fontsize=7,
        )
        ax.invert_yaxis()
        ax.set_title(f"{a} vs {b} ({mods})", fontsize=9)
        ax.set_xlabel(f"difference, > 0 favours {a}", fontsize=8)
    fig.suptitle(f"paired bootstrap, red: Holm-adjusted p < {alpha:g}", fontsize=9)
    return _save(fig, path)


def write_html(
    run_dir: Path, summary_md: str, figures: list[Path], extra_md: str | None = None
) -> Path:
    """A single self-contained HTML page: the summary tables and every figure inline."""
    body = [
        f"<h1>radiopath report: {html.escape(run_dir.name)}</h1>",
        f"<pre style='font-size:12px'>{html.escape(summary_md)}</pre>",
    ]
    if extra_md:
        body.append(f"<pre style='font-size:12px'>{html.escape(extra_md)}</pre>")
    body += [_embed_png(f) for f in figures if f.exists()]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>radiopath report</title>"
        "</head><body style='font-family:sans-serif;max-width:1200px;margin:auto'>"
        + "\n".join(body)
        + "</body></html>"
    )
    return write_text(run_dir / "report.html", page)


def _recorded_statistics(run_dir: Path) -> dict:
    """The ``statistics`` section the run was started with (run.json), if any."""
    path = run_dir / "run.json"
    if not path.exists():
        return {}
    try:
        section = (json.loads(path.read_text()).get("config") or {}).get("statistics")
    except json.JSONDecodeError:
        return {}
    return dict(section) if isinstance(section, dict) else {}


def _design(analysis: Analysis) -> str:
    cfg = analysis.config
    folds = analysis.n_folds // max(analysis.n_repeats, 1)
    return (
        f"{analysis.n_patients} patients, {folds} folds x {analysis.n_repeats} repeat(s) = "
        f"{analysis.n_folds} test folds; intervals and paired tests: {cfg['bootstrap']} "
        f"patient-level bootstrap replicates of the out-of-fold predictions (stratified by "
        f"event, seed {cfg['seed']}), alpha = {cfg['alpha']:g}."
    )


def write_report(
    run_dir: str | os.PathLike,
    *,
    statistics: dict | None = None,
    reference: str | None = None,
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
    """

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    written: dict[str, Path] = {}
    analysis = None
    if (run_dir / "predictions.csv").exists():
        settings = {**_recorded_statistics(run_dir), **(statistics or {})}
        analysis = analyse_run(run_dir, settings)
        write_csv(analysis.intervals, run_dir / "intervals.csv")
        write_csv(analysis.comparisons, run_dir / "comparisons.csv")
        written.update(intervals=run_dir / "intervals.csv", comparisons=run_dir / "comparisons.csv")
    else:
        log.warning("%s has no predictions.csv: no intervals or paired tests", run_dir)
    summary = summarize(
        metrics,
        None if analysis is None else analysis.intervals,
        None if analysis is None else analysis.comparisons,
        alpha=0.05 if analysis is None else analysis.config["alpha"],
        design=None if analysis is None else _design(analysis),
    )
    write_text(run_dir / "summary.md", summary)
    extra = None
    if reference is not None:
        from radiopath.reference import beside_reference

        extra = beside_reference(metrics, reference)
        write_text(run_dir / "reference.md", extra)
        written["reference"] = run_dir / "reference.md"
    figures = [plot_metric_panels(metrics, run_dir / "figures" / "metrics.png")]
    if analysis is not None and not analysis.comparisons.empty:
        figures.append(
            plot_comparisons(
                analysis.comparisons,
                run_dir / "figures" / "comparisons.png",
                analysis.config["alpha"],
            )
        )
    pred_path, sel_path = run_dir / "predictions.csv", run_dir / "selection.csv"
    if pred_path.exists() and sel_path.exists():
        predictions, selection = pd.read_csv(pred_path), pd.read_csv(sel_path)
        for model in dict.fromkeys(predictions.model):
            figures.append(
                plot_risk_groups(
                    predictions, selection, run_dir / "figures" / f"km_{model}.png", model
                )
            )
    ablation = sorted((run_dir / "figures").glob("ablation_*.png"))
    page = write_html(run_dir, summary, figures + ablation, extra)
    return {
        "summary": run_dir / "summary.md",
        "html": page,
        "figures": run_dir / "figures",
        **written,
    }
