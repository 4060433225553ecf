"""Tables and figures of a finished run: ``summary.md``, PNG figures and one HTML page.

Works on a benchmark directory (several aggregators) or a single training run that has
been evaluated: everything is recomputed from ``metrics.csv`` (and ``predictions.csv`` for
the risk-group curves), so the report always agrees with the numbers on disk.
"""

from __future__ import annotations

import base64
import html
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from radiopath.errors import RadiopathInputError  # noqa: E402
from radiopath.evaluation.report import (  # noqa: E402
    fold_statistics,
    pooled_risk_groups,
    summarize,
)

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


def plot_metric_panels(metrics: pd.DataFrame, path: Path) -> Path:
    """One panel per metric: bars per model, grouped by aggregator, error bars = sd over folds."""
    stats = fold_statistics(metrics)
    names = [m for m in METRIC_LABELS if m in set(stats.metric)]
    stats = stats.assign(study=stats.aggregator + " | " + stats.modalities)
    studies = list(dict.fromkeys(stats.study))
    models = list(dict.fromkeys(stats.model))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig, axes = plt.subplots(1, len(aggs), figsize=(4.6 * len(aggs), 4), squeeze=False)
    for ax, agg in zip(axes[0], aggs):
        groups = pooled_risk_groups(preds[preds.aggregator == agg], selection, "mean")
        groups.plot(ax=ax, title=f"{agg} / {model}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _embed_png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def write_html(run_dir: Path, summary_md: str, figures: list[Path]) -> Path:
    """A single self-contained HTML page: the summary tables and every figure inline."""
    body = [
        f"<h1>radiopath report: {html.escape(run_dir.name)}</h1>",
        f"<pre style='font-size:12px'>{html.escape(summary_md)}</pre>",
    ]
    body += [_embed_png(f) for f in figures if f.exists()]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>radiopath report</title>"
        "</head><body style='font-family:sans-serif;max-width:1200px;margin:auto'>"
        + "\n".join(body)
        + "</body></html>"
    )
    out = run_dir / "report.html"
    out.write_text(page)
    return out


def write_report(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``summary.md``, ``figures/*.png`` and ``report.html`` for a run directory."""

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    summary = summarize(metrics)
    (run_dir / "summary.md").write_text(summary)
    figures = [plot_metric_panels(metrics, run_dir / "figures" / "metrics.png")]
    pred_path, sel_path = run_dir / "predictions.csv", run_dir / "selection.csv"
    if pred_path.exists() and sel_path.exists():
        predictions, selection = pd.read_csv(pred_path), pd.read_csv(sel_path)
        for model in dict.fromkeys(predictions.model):
            figures.append(
                plot_risk_groups(
                    predictions, selection, run_dir / "figures" / f"km_{model}.png", model
                )
            )
    extra = sorted((run_dir / "figures").glob("ablation_*.png"))
    page = write_html(run_dir, summary, figures + extra)
    return {"summary": run_dir / "summary.md", "html": page, "figures": run_dir / "figures"}
