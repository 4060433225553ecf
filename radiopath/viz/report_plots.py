"""The figures of a run's report, each a PNG for a paper and an image of ``report.html``.

* :func:`plot_metric_panels` -- one panel per metric, bars per model and aggregator;
* :func:`plot_risk_groups` -- Kaplan-Meier curves of high and low test risk with the numbers
  at risk under the axis;
* :func:`plot_comparisons` -- a forest plot of the paired per-study differences between
  aggregators with their bootstrap intervals;
* :func:`plot_calibration` -- predicted against observed event probability at one horizon;
* :func:`plot_fold_spread` -- every outer fold's value of every metric, per aggregator.

Figures use matplotlib's object API (no pyplot state, no backend is chosen).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from radiopath.evaluation.config import METRICS, lower_is_better
from radiopath.evaluation.report import MODEL_LABELS, fold_statistics, pooled_risk_groups
from radiopath.evaluation.tables import METRIC_LABELS as SHORT_LABELS
from radiopath.evaluation.tables import _metric_label
from radiopath.runkit import atomic_path

METRIC_LABELS = {
    "c_index": "C-index (Harrell)",
    "c_ipcw": "C-IPCW (Uno)",
    "c_auc": "mean cumulative/dynamic AUC",
    "ibs": "integrated Brier score (lower is better)",
}


def _panels(n: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    """A figure of ``n`` panels side by side."""
    fig = Figure(figsize=(width * max(n, 1), height))
    return fig, fig.subplots(1, max(n, 1), squeeze=False)


def save_figure(fig: Figure, path: Path, dpi: int = 110, layout: bool = True) -> Path:
    """Lay out (unless the figure set its margins) and write a figure as PNG atomically."""
    if layout:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def plot_metric_panels(metrics: pd.DataFrame, path: Path) -> Path:
    """One panel per metric: bars per model, grouped by aggregator, error bars = sd over folds."""
    stats = fold_statistics(metrics)
    names = [m for m in METRIC_LABELS if m in set(stats.metric)]
    stats = stats.assign(study=stats.aggregator + " | " + stats.modalities.astype(str))
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
    return save_figure(fig, path)


def add_at_risk_counts(ax: Axes, fitters: list[tuple[str, KaplanMeierFitter, str]]) -> None:
    """Numbers at risk of each group at the x ticks, one row per group under the axis.

    ``fitters`` holds ``(label, fitted Kaplan-Meier, colour)``; the count at ``t`` is the
    number of the group's patients whose time is at least ``t``.
    """
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    where = blended_transform_factory(ax.transData, ax.transAxes)
    ax.text(lo, -0.22, "at risk", transform=where, ha="right", fontsize=7, color="black")
    for row, (label, km, color) in enumerate(fitters):
        durations = np.asarray(km.durations, dtype=float)
        y = -0.30 - 0.08 * row
        ax.text(lo, y, label, transform=where, ha="right", fontsize=7, color=color)
        for t in ticks:
            n = int((durations >= t).sum())
            ax.text(t, y, str(n), transform=where, ha="center", fontsize=7, color=color)


def plot_risk_groups(
    predictions: pd.DataFrame, selection: pd.DataFrame, path: Path, model: str
) -> Path:
    """Kaplan-Meier curves of high/low test risk for each aggregator and one model.

    Each fold's test patients are split at the mean risk of that fold's *training*
    patients (the paper's rule; :func:`radiopath.evaluation.report.pooled_risk_groups`)
    and the folds are pooled; the log-rank p-value is lifelines'. The numbers at risk of
    both groups are written under each panel.
    """
    preds = predictions[predictions.model == model]
    aggs = list(dict.fromkeys(preds.aggregator))
    fig, axes = _panels(len(aggs), 4.6, 4.6)
    # fixed margins (inches) for the two-line titles and the rows at risk: no layout pass
    width = 4.6 * len(aggs)
    fig.subplots_adjust(
        left=0.7 / width, right=1 - 0.2 / width, bottom=1.35 / 4.6, top=1 - 0.65 / 4.6, wspace=0.3
    )
    for ax, agg in zip(axes[0], aggs):
        groups = pooled_risk_groups(preds[preds.aggregator == agg], selection, "mean")
        groups.plot(ax=ax, title=f"{agg} / {MODEL_LABELS.get(model, model)}")
        ax.title.set_fontsize(9)
        fitters = [
            (name, km, color)
            for name, km, color in (
                ("low", groups.km_low, "tab:blue"),
                ("high", groups.km_high, "tab:red"),
            )
            if km is not None
        ]
        add_at_risk_counts(ax, fitters)
    return save_figure(fig, path, layout=False)


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
    return save_figure(fig, path)


def survival_at(survival: pd.DataFrame, horizon: float) -> pd.DataFrame:
    """Each test prediction's survival at ``horizon`` from ``survival.csv``.

    A fold's survival is known on its time grid; the value at ``horizon`` is the one at
    the last grid time not after it (survival functions are step functions). Folds whose
    grid starts after ``horizon`` are left out. Returns one row per ``aggregator,
    modalities, model, fold, patient_id`` with a ``survival`` column.
    """
    keys = ["aggregator", "modalities", "model", "fold", "patient_id"]
    before = survival[survival["t"] <= horizon]
    if before.empty:
        return pd.DataFrame(columns=[*keys, "survival"])
    last = before.sort_values("t").groupby(keys, sort=False).tail(1)
    return last[[*keys, "survival"]].reset_index(drop=True)


def default_horizon(predictions: pd.DataFrame, survival: pd.DataFrame) -> float:
    """The median event time of the cohort, or the median time when no event is seen,
    clipped to the smallest time every fold's survival grid reaches."""
    outcomes = predictions.drop_duplicates("patient_id")
    events = outcomes.loc[outcomes["event"] == 1, "time"]
    horizon = float((events if len(events) else outcomes["time"]).median())
    reach = survival.groupby("fold")["t"].max().min()
    return float(min(horizon, reach)) if np.isfinite(reach) else horizon


def kaplan_meier_at(time: np.ndarray, event: np.ndarray, t: float) -> float:
    """The Kaplan-Meier survival at ``t``: the product over event times ``u <= t`` of
    ``1 - d(u) / n(u)`` (``d``: events at ``u``, ``n``: patients with time ``>= u``)."""
    time, event = np.asarray(time, dtype=float), np.asarray(event).astype(bool)
    times, deaths = np.unique(time[event & (time <= t)], return_counts=True)
    at_risk = (time[None, :] >= times[:, None]).sum(axis=1)
    return float(np.prod(1.0 - deaths / at_risk))


def calibration_table(
    predictions: pd.DataFrame, survival: pd.DataFrame, horizon: float, bins: int | None = None
) -> pd.DataFrame:
    """Predicted against observed probability of an event by ``horizon``, by risk group.

    For each aggregator and model the pooled test patients are cut into ``bins`` equal
    groups by predicted probability ``1 - S(horizon)``; ``observed`` is one minus the
    Kaplan-Meier survival of the group at ``horizon`` (censoring-aware).
    """
    at = survival_at(survival, horizon)
    keys = ["aggregator", "modalities", "model", "fold", "patient_id"]
    outcomes = predictions[[*keys, "time", "event"]]
    data = at.merge(outcomes, on=keys, how="inner")
    rows = []
    for (agg, mods, model), part in data.groupby(["aggregator", "modalities", "model"], sort=False):
        k = bins or int(np.clip(len(part) // 15, 2, 5))
        predicted = 1.0 - part["survival"].to_numpy(dtype=float)
        groups = pd.qcut(pd.Series(predicted).rank(method="first"), k, labels=False).to_numpy()
        for g in range(k):
            sel = groups == g
            rows.append(
                {
                    "aggregator": agg,
                    "modalities": mods,
                    "model": model,
                    "group": g,
                    "n": int(sel.sum()),
                    "predicted": float(predicted[sel].mean()),
                    "observed": 1.0
                    - kaplan_meier_at(
                        part["time"].to_numpy()[sel], part["event"].to_numpy()[sel], horizon
                    ),
                }
            )
    return pd.DataFrame(rows)


def plot_calibration(table: pd.DataFrame, horizon: float, path: Path) -> Path:
    """One panel per model: predicted vs observed event probability, a line per aggregator."""
    models = list(dict.fromkeys(table["model"]))
    fig, axes = _panels(len(models), 3.8, 3.8)
    for ax, model in zip(axes[0], models):
        sub = table[table["model"] == model]
        for (agg, mods), part in sub.groupby(["aggregator", "modalities"], sort=False):
            ax.plot(part["predicted"], part["observed"], "o-", ms=4, label=f"{agg} ({mods})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"predicted P(event by t = {horizon:g})", fontsize=8)
        ax.set_ylabel("observed (Kaplan-Meier)", fontsize=8)
        ax.set_title(MODEL_LABELS.get(model, model), fontsize=10)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"calibration at t = {horizon:g}, test patients pooled over folds", fontsize=9)
    return save_figure(fig, path)


def fold_values(metrics: pd.DataFrame, by: str = "aggregator") -> pd.DataFrame:
    """Each fold's value of each metric averaged over the downstream models, per ``by``."""
    main = metrics[metrics["metric"].isin(METRICS)].dropna(subset=["value"])
    return main.groupby([by, "metric", "fold"], sort=False)["value"].mean().reset_index()


def plot_fold_spread(metrics: pd.DataFrame, path: Path, by: str = "aggregator") -> Path:
    """One panel per metric: the outer folds' values (mean over models) of each ``by`` group,
    a box and every fold as a dot, so a difference can be read against the spread."""
    values = fold_values(metrics, by)
    names = [m for m in METRICS if m in set(values["metric"])]
    groups = list(dict.fromkeys(values[by].astype(str)))
    width = max(2.4, 0.5 * len(groups) + 1.2)
    if len(groups) > 8:  # many runs: one panel per metric, stacked, each the page's width
        fig = Figure(figsize=(min(width, 16), 3.4 * len(names)))
        axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    else:
        fig, panels = _panels(len(names), width, 3.6)
        axes = panels[0]
    rng = np.random.default_rng(0)  # jitter only
    for ax, metric in zip(axes, names):
        sub = values[values["metric"] == metric]
        data = [sub.loc[sub[by].astype(str) == g, "value"].to_numpy() for g in groups]
        ax.boxplot(data, widths=0.5, showfliers=False)
        for i, v in enumerate(data):
            ax.plot(i + 1 + rng.uniform(-0.12, 0.12, len(v)), v, "o", ms=3, alpha=0.7)
        ax.set_xticks(range(1, len(groups) + 1), groups, rotation=30, ha="right", fontsize=8)
        ax.set_title(SHORT_LABELS.get(metric, metric), fontsize=10)
    fig.suptitle("per-fold values (mean over models)", fontsize=9)
    return save_figure(fig, path)
