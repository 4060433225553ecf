"""Tables, risk groups and run-directory outputs of the downstream evaluation.

* :func:`summarize` -- the paper's Table 1 in markdown: per-study mean (sd) over folds, the
  average over models, and which aggregator wins how many of the 19 studies;
* :func:`km_risk_groups` -- high / low risk groups split at the mean (or median) training
  risk, Kaplan-Meier curves (lifelines) and the log-rank p-value (Gao et al. 2025, Fig. 4);
* :func:`evaluate_run` -- the protocol on a training run directory, writing
  ``predictions.csv``, ``metrics.csv``, ``selection.csv``, ``survival.csv``, ``summary.md``
  and ``figures/km_<aggregator>_<model>.png``, and recording itself in ``run.json``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from matplotlib.figure import Figure

from radiopath.config import deep_merge, git_commit, package_versions
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import (
    EXTRA_METRICS,
    METRICS,
    MODELS,
    SURVIVAL_FUNCTION_MODELS,
    lower_is_better,
    ordered_aggregators,
    resolve_evaluation_config,
)
from radiopath.evaluation.protocol import (
    METRIC_COLUMNS,
    PREDICTION_COLUMNS,
    SELECTION_COLUMNS,
    EvaluationResult,
    evaluate_folds,
)
from radiopath.io import read_fold_embeddings
from radiopath.runkit import RunLock, atomic_path, digests, verify_digests, write_text

log = logging.getLogger(__name__)

__all__ = [
    "RiskGroups",
    "evaluate_run",
    "fold_statistics",
    "km_risk_groups",
    "pooled_risk_groups",
    "studies",
    "summarize",
    "summary_blocks",
    "win_counts",
]

METRIC_LABELS = {
    "c_index": "C-index",
    "c_ipcw": "C-IPCW",
    "c_auc": "C-AUC",
    "ibs": "IBS",
    "c_index_random_ties": "C-index (random ties)",
}
MODEL_LABELS = {"rsf": "RSF", "coxph": "CoxPH", "coxnet": "Coxnet", "fsvm": "FSVM", "avg": "Avg."}
SURVIVAL_COLUMNS = ["aggregator", "modalities", "model", "fold", "patient_id", "t", "survival"]
"""``survival.csv``: each test patient's predicted survival at its fold's metric time grid
and at the configured horizons (RSF, CoxPH, Coxnet)."""


# ----------------------------------------------------------------------------- summary


def _ordered(values, reference: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    known = [v for v in reference if v in values]
    return known + sorted(v for v in values if v not in reference)


def studies(models: Sequence[str]) -> list[tuple[str, str]]:
    """The studies of a set of models: (model, metric) pairs plus ('avg', metric).

    With the four models these are the paper's 19: 4 x (C-index, C-IPCW, C-AUC) + 3 x IBS
    + 4 averages.
    """
    out = [(m, k) for k in METRICS for m in models if k != "ibs" or m in SURVIVAL_FUNCTION_MODELS]
    for k in METRICS:
        if any(m for m, kk in out if kk == k):
            out.append(("avg", k))
    return out


def fold_statistics(df: pd.DataFrame) -> pd.DataFrame:
    """mean, sd (ddof=1) and counts of valid / all folds per (aggregator, modalities, model, metric)."""
    keys = ["modalities", "aggregator", "model", "metric"]
    g = df.groupby(keys, sort=False)["value"]
    out = pd.DataFrame(
        {
            "mean": g.mean(),
            "sd": g.std(ddof=1),
            "n_valid": g.count(),
            "n_folds": g.size(),
        }
    ).reset_index()
    return out


def _with_average(stats: pd.DataFrame) -> pd.DataFrame:
    """Add the 'avg' model: mean of the model means and mean of the model sds (the paper's Table 1)."""
    main = stats[stats["metric"].isin(METRICS) & (stats["n_valid"] > 0)]
    avg = (
        main.groupby(["modalities", "aggregator", "metric"], sort=False)
        .agg(
            mean=("mean", "mean"),
            sd=("sd", "mean"),
            n_valid=("n_valid", "min"),
            n_folds=("n_folds", "max"),
        )
        .reset_index()
    )
    avg["model"] = "avg"
    return pd.concat([stats, avg[stats.columns]], ignore_index=True)


def _cell(row: pd.Series | None, bold: bool = False) -> str:
    if row is None:
        return "n/a"
    if row["n_valid"] == 0:
        return "failed"
    sd = "" if not np.isfinite(row["sd"]) else f" ({row['sd']:.3f})"
    text = f"{row['mean']:.3f}{sd}"
    if bold:
        text = f"**{text}**"
    if row["n_valid"] < row["n_folds"] and row["model"] != "avg":
        text += f" [{int(row['n_valid'])}/{int(row['n_folds'])} folds]"
    return text


def summarize(
    metrics: pd.DataFrame,
    intervals: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
    *,
    alpha: float = 0.05,
    design: str | None = None,
) -> str:
    """Markdown summary of a metrics table (one or several aggregators and modality sets).

    For each modality set: a table in the layout of the paper's Table 1 -- one block of
    rows per aggregator, one row per metric, one column per model plus ``Avg.`` -- with
    the mean (sd) over folds; the best aggregator of each study in bold (lowest for IBS);
    and the win counts ("sparra is best in 14 of 19 studies"). The average over models is
    the mean of the models' means, its sd the mean of their sds, as in the paper. Folds
    whose fit failed are excluded and counted ("[4/5 folds]") and listed at the end.

    With ``intervals`` and ``comparisons`` (:func:`radiopath.evaluation.stats.analyse_run`)
    each cell gets its bootstrap interval, a block gives every paired difference with its
    interval and p-values, and the win counts say how many wins are significant: the best
    aggregator beats every other one of the study at ``alpha`` after Holm's correction over
    the 19 studies (paired bootstrap). Without them the win counts are marked untested.

    Parameters
    ----------
    metrics
        A frame with columns ``aggregator, modalities, model, fold, metric, value``
        (``status`` and ``message`` optional), e.g. :attr:`EvaluationResult.metrics` or
        several of them concatenated.
    intervals, comparisons
        ``intervals.csv`` and ``comparisons.csv`` of the same run.
    alpha
        Level of the intervals (1 - alpha) and of the tests.
    design
        A line on the cohort and resampling (patients, folds x repeats, replicates).
    """
    need = {"aggregator", "modalities", "model", "fold", "metric", "value"}
    missing = need - set(metrics.columns)
    if missing:
        raise RadiopathInputError(
            f"metrics table lacks column(s) {sorted(missing)}", field="metrics"
        )
    if metrics.empty:
        return "# Downstream survival evaluation\n\nNo metrics.\n"
    df = metrics.copy()
    df["modalities"] = df["modalities"].astype(str)
    df["aggregator"] = df["aggregator"].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    stats = _with_average(fold_statistics(df))
    tested = intervals is not None
    lines = ["# Downstream survival evaluation", ""]
    lines.append(
        "Mean (sd) over outer folds"
        + (f" [{1 - alpha:.0%} bootstrap interval]" if tested else "")
        + ". Higher is better except IBS. Avg. = mean over models "
        "(its sd: the mean of the models' sds). **Bold**: best aggregator of the study."
    )
    if design:
        lines += ["", design]
    lines += summary_blocks(stats, intervals, comparisons, alpha=alpha)
    failed = df[df["value"].isna()]
    if not failed.empty:
        lines += ["", "## Failed or undefined", ""]
        msg_col = "message" if "message" in failed.columns else None
        grouped = failed.groupby(["aggregator", "modalities", "model", "fold"], sort=False)
        for (a, mods, m, f), rows in grouped:
            msgs = sorted(set(rows[msg_col].fillna("").astype(str))) if msg_col else []
            what = ", ".join(METRIC_LABELS.get(k, k) for k in rows["metric"])
            lines.append(
                f"- {a} / {mods} / {m} / fold {f}: {what}"
                + (f" -- {'; '.join(msgs)}" if msgs else "")
            )
    return "\n".join(lines) + "\n"


def table_head(first: str, columns) -> list[str]:
    """The two header lines of a ``| first | Metric | <model columns> |`` markdown table."""
    return [
        f"| {first} | Metric | " + " | ".join(MODEL_LABELS.get(m, m) for m in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]


def _metric_label(metric: str) -> str:
    kind, _, horizon = metric.partition("@")
    if horizon:
        return {"auc": "AUC", "brier": "Brier"}.get(kind, kind) + f" at t={horizon}"
    return METRIC_LABELS.get(metric, metric)


def _interval_text(row) -> str:
    if row is None or not np.isfinite(row["ci_low"]):
        return ""
    return f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _best(lookup, aggs, study_list, lower) -> dict[tuple[str, str], set[str]]:
    best: dict[tuple[str, str], set[str]] = {}
    for m, k in study_list:
        vals = {
            a: lookup[(a, m, k)]["mean"]
            for a in aggs
            if (a, m, k) in lookup and lookup[(a, m, k)]["n_valid"] > 0
        }
        if not vals or len(aggs) < 2:
            best[(m, k)] = set()
            continue
        target = min(vals.values()) if lower(k) else max(vals.values())
        best[(m, k)] = {a for a, v in vals.items() if np.isclose(v, target, rtol=0, atol=1e-12)}
    return best


def _beats(pairs: dict, a: str, others, study, alpha: float, lower: bool) -> bool:
    """Whether ``a`` beats every one of ``others`` in ``study`` at ``alpha`` after Holm."""
    for b in others:
        row, sign = pairs.get((a, b, *study)), 1.0
        if row is None:
            row, sign = pairs.get((b, a, *study)), -1.0
        if row is None or not np.isfinite(row["p_holm"]) or row["p_holm"] >= alpha:
            return False
        better = sign * row["delta"] < 0 if lower else sign * row["delta"] > 0
        if not better:
            return False
    return True


def summary_blocks(
    stats: pd.DataFrame,
    intervals: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
    *,
    alpha: float = 0.05,
    untested: str = "`radiopath report` adds intervals and paired tests",
) -> list[str]:
    """The per-modality-set tables, win counts and paired differences of :func:`summarize`.

    ``stats`` has one row per ``modalities, aggregator, model, metric`` with ``mean, sd,
    n_valid, n_folds`` (:func:`fold_statistics` plus the ``avg`` model) -- the form the
    published reference tables take too.
    """
    lines: list[str] = []
    inter = {}
    if intervals is not None:
        for r in intervals.to_dict("records"):
            inter[(str(r["modalities"]), r["aggregator"], r["model"], r["metric"])] = r
    pairs = {}
    if comparisons is not None:
        for r in comparisons.to_dict("records"):
            pairs[
                (
                    str(r["modalities"]),
                    r["aggregator_a"],
                    r["aggregator_b"],
                    r["model"],
                    r["metric"],
                )
            ] = r
    for mods in _ordered(stats["modalities"], []):
        sub = stats[stats["modalities"] == mods]
        aggs, models, study_list, lookup, best = _modality_setup(sub)
        lines += ["", f"## Modalities: {mods}", ""]
        cols = [*models, "avg"]
        lines += table_head("Aggregator", cols)
        for a in aggs:
            for k in METRICS:
                if not any((a, m, k) in lookup for m in cols):
                    continue
                cells = []
                for m in cols:
                    row = lookup.get((a, m, k))
                    text = _cell(
                        None if row is None else pd.Series(row), bold=a in best.get((m, k), set())
                    )
                    if row is not None and row["n_valid"] > 0:
                        text += _interval_text(inter.get((mods, a, m, k)))
                    cells.append(text)
                lines.append(f"| {a} | {METRIC_LABELS[k]} | " + " | ".join(cells) + " |")
        n_studies = len(study_list)
        lines += ["", f"{n_studies} studies ({len(models)} models)."]
        if len(aggs) >= 2:
            scoped = None
            if comparisons is not None:
                scoped = {key[1:]: row for key, row in pairs.items() if key[0] == mods}
            wins, significant = _wins(aggs, study_list, best, scoped, alpha)
            lines += _win_lines(aggs, len(study_list), wins, significant, alpha, untested)
        extra = sub[sub["metric"].isin(EXTRA_METRICS)]
        if not extra.empty:
            lines += ["", *table_head("Aggregator", models)]
            for a in aggs:
                for k in EXTRA_METRICS:
                    cells = []
                    for m in models:
                        row = lookup.get((a, m, k))
                        cells.append(_cell(None if row is None else pd.Series(row)))
                    lines.append(f"| {a} | {METRIC_LABELS[k]} | " + " | ".join(cells) + " |")
        lines += _horizon_lines(intervals, mods, aggs, cols)
        if comparisons is not None:
            lines += _delta_lines(comparisons, mods, study_list, alpha)
    return lines


def _modality_setup(sub: pd.DataFrame):
    """Aggregators, models, studies, ``(aggregator, model, metric) -> row`` and the best
    aggregators of each study, for the statistics of one modality set."""
    aggs = ordered_aggregators(sub["aggregator"])
    models = _ordered(sub.loc[sub["model"] != "avg", "model"], MODELS)
    study_list = studies(models)
    lookup = {(r["aggregator"], r["model"], r["metric"]): r for r in sub.to_dict("records")}
    return aggs, models, study_list, lookup, _best(lookup, aggs, study_list, lower_is_better)


def _wins(aggs, study_list, best, scoped, alpha) -> tuple[dict, dict | None]:
    """Studies won by each aggregator, and (with comparisons) how many significantly."""
    wins = {a: sum(a in best[s] for s in study_list) for a in aggs}
    if scoped is None:
        return wins, None
    significant = {a: 0 for a in aggs}
    for s in study_list:
        for a in best[s]:
            others = [b for b in aggs if b != a]
            if _beats(scoped, a, others, s, alpha, lower_is_better(s[1])):
                significant[a] += 1
    return wins, significant


def win_counts(
    metrics: pd.DataFrame, comparisons: pd.DataFrame | None = None, alpha: float = 0.05
) -> pd.DataFrame:
    """Per modality set and aggregator: studies, studies won by the means, and (with
    ``comparisons``) studies won significantly -- the numbers of the summary's win table."""
    df = metrics.assign(
        modalities=metrics["modalities"].astype(str),
        value=pd.to_numeric(metrics["value"], errors="coerce"),
    )
    stats = _with_average(fold_statistics(df))
    rows = []
    for mods in _ordered(stats["modalities"], []):
        aggs, _, study_list, _, best = _modality_setup(stats[stats["modalities"] == mods])
        scoped = None
        if comparisons is not None:
            sub = comparisons[comparisons["modalities"].astype(str) == mods]
            scoped = {
                (r["aggregator_a"], r["aggregator_b"], r["model"], r["metric"]): r
                for r in sub.to_dict("records")
            }
        wins, significant = _wins(aggs, study_list, best, scoped, alpha)
        for a in aggs:
            rows.append(
                {
                    "modalities": mods,
                    "aggregator": a,
                    "n_studies": len(study_list),
                    "wins": wins[a],
                    "significant": None if significant is None else significant[a],
                }
            )
    return pd.DataFrame(rows)


def _win_lines(aggs, n_studies, wins, significant, alpha, untested) -> list[str]:
    tested = significant is not None
    head = "| Aggregator | Studies won |" + (" significantly |" if tested else "")
    lines = ["", head, "|---|---|" + ("---|" if tested else "")]
    for a in sorted(aggs, key=lambda x: -wins[x]):
        lines.append(
            f"| {a} | {wins[a]} of {n_studies} |" + (f" {significant[a]} |" if tested else "")
        )
    top = max(wins.values())
    leaders = [a for a in aggs if wins[a] == top]
    claim = f"**{' and '.join(leaders)}** best in {top} of {n_studies} studies"
    if tested:
        sig = " / ".join(str(significant[a]) for a in leaders)
        lines += [
            "",
            f"{claim}, significantly in {sig} (beats every other aggregator of the study: "
            f"paired bootstrap, Holm over the {n_studies} studies, alpha = {alpha:g}; ties "
            "count for each).",
        ]
    else:
        lines += ["", f"{claim} by the means, untested (ties count for each; {untested})."]
    return lines


def _horizon_lines(intervals, mods, aggs, cols) -> list[str]:
    if intervals is None:
        return []
    sub = intervals[
        (intervals["modalities"].astype(str) == mods) & intervals["metric"].str.contains("@")
    ]
    if sub.empty:
        return []
    lines = [
        "",
        "Fixed horizons: mean over folds [bootstrap interval] (time-dependent AUC, higher is "
        "better; Brier score, lower is better).",
        "",
        *table_head("Aggregator", cols),
    ]
    look = {(r["aggregator"], r["model"], r["metric"]): r for r in sub.to_dict("records")}
    for a in aggs:
        for k in dict.fromkeys(sub["metric"]):
            cells = []
            for m in cols:
                r = look.get((a, m, k))
                ok = r is not None and np.isfinite(r["estimate"])
                cells.append(f"{r['estimate']:.3f}{_interval_text(r)}" if ok else "n/a")
            lines.append(f"| {a} | {_metric_label(k)} | " + " | ".join(cells) + " |")
    return lines


def _delta_lines(comparisons, mods, study_list, alpha) -> list[str]:
    sub = comparisons[comparisons["modalities"].astype(str) == mods]
    if sub.empty:
        return []
    pair_names = list(dict.fromkeys(zip(sub["aggregator_a"], sub["aggregator_b"])))
    rows = [*study_list]
    rows += [k for k in dict.fromkeys(zip(sub["model"], sub["metric"])) if k not in set(study_list)]
    look = {
        (r["aggregator_a"], r["aggregator_b"], r["model"], r["metric"]): r
        for r in sub.to_dict("records")
    }
    lines = [
        "",
        f"### Paired differences: delta ({1 - alpha:.0%} CI), p (Holm) bootstrap; Wilcoxon",
        "",
        "delta = first - second aggregator (for IBS and Brier lower is better); bootstrap: "
        "the same resampled patients for both; Wilcoxon signed-rank over folds x repeats; "
        "Holm over the studies (the horizons apart). **Bold**: Holm-adjusted bootstrap p < "
        f"{alpha:g}.",
        "",
        "| Model | Metric | " + " | ".join(f"{a} - {b}" for a, b in pair_names) + " |",
        "|---|---|" + "---|" * len(pair_names),
    ]
    for m, k in rows:
        cells = []
        for a, b in pair_names:
            r = look.get((a, b, m, k))
            if r is None or not np.isfinite(r["delta"]):
                cells.append("n/a")
                continue
            text = (
                f"{r['delta']:+.3f} ({r['ci_low']:+.3f}, {r['ci_high']:+.3f}), "
                f"p {r['p']:.3f} ({r['p_holm']:.3f}); {_p(r['p_wilcoxon'])} ({_p(r['p_wilcoxon_holm'])})"
            )
            if np.isfinite(r["p_holm"]) and r["p_holm"] < alpha:
                text = f"**{text}**"
            cells.append(text)
        lines.append(
            f"| {MODEL_LABELS.get(m, m)} | {_metric_label(k)} | " + " | ".join(cells) + " |"
        )
    return lines


def _p(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


# ----------------------------------------------------------------------------- risk groups


@dataclass
class RiskGroups:
    """High- and low-risk groups of test patients and their Kaplan-Meier estimates.

    Attributes
    ----------
    high
        ``[n]`` bool, True where the test risk exceeds ``threshold``.
    threshold
        The split point (mean or median of the training risk, or one per patient when
        pooled over folds).
    split
        ``"mean"`` or ``"median"``.
    p_value
        Log-rank test of high vs low (NaN when a group is empty).
    km_low, km_high
        Fitted ``lifelines.KaplanMeierFitter`` (None for an empty group).
    """

    high: np.ndarray
    threshold: np.ndarray | float
    split: str
    p_value: float
    km_low: KaplanMeierFitter | None
    km_high: KaplanMeierFitter | None

    def plot(self, ax=None, title: str | None = None) -> Figure:
        """Kaplan-Meier curves of the two groups with the log-rank p-value."""
        if ax is None:
            fig = Figure(figsize=(5, 4))
            ax = fig.add_subplot(1, 1, 1)
        else:
            fig = ax.figure
        for km, color in ((self.km_low, "tab:blue"), (self.km_high, "tab:red")):
            if km is not None:
                km.plot_survival_function(ax=ax, ci_show=True, color=color)
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        p = "n/a" if not np.isfinite(self.p_value) else f"{self.p_value:.2g}"
        ax.set_title(
            (title + "\n" if title else "")
            + f"split at the {self.split} training risk, log-rank p = {p}"
        )
        ax.set_ylim(0, 1.02)
        return fig


def _groups(high: np.ndarray, time, event, threshold, split: str) -> RiskGroups:
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    km = {}
    for name, sel in (("low", ~high), ("high", high)):
        if sel.any():
            km[name] = KaplanMeierFitter(label=f"{name} risk (n={int(sel.sum())})").fit(
                time[sel], event[sel]
            )
        else:
            km[name] = None
    if high.any() and (~high).any():
        p = float(logrank_test(time[high], time[~high], event[high], event[~high]).p_value)
    else:
        p = float("nan")
        log.info("risk groups: one group is empty, no log-rank test")
    return RiskGroups(high, threshold, split, p, km["low"], km["high"])


def km_risk_groups(
    pred_train_risk, test_risk, time, event, split: str = "mean"
) -> tuple[RiskGroups, float]:
    """Split test patients at the mean (or median) training risk; KM curves and log-rank p.

    Parameters
    ----------
    pred_train_risk
        Risks the model predicts for its own training patients; the threshold is their
        mean (the paper's choice) or median.
    test_risk, time, event
        Test patients' risks and outcomes.
    split
        ``"mean"`` or ``"median"``.

    Returns
    -------
    groups : RiskGroups
        ``groups.plot()`` draws the figure.
    p_value : float
        Log-rank test between the groups (Mantel 1966), NaN if one group is empty.
    """
    if split not in ("mean", "median"):
        raise RadiopathInputError(f"split must be 'mean' or 'median', got {split!r}", field="split")
    train = np.asarray(pred_train_risk, dtype=float)
    threshold = float(np.mean(train) if split == "mean" else np.median(train))
    high = np.asarray(test_risk, dtype=float) > threshold
    g = _groups(high, time, event, threshold, split)
    return g, g.p_value


def pooled_risk_groups(
    predictions: pd.DataFrame, selection: pd.DataFrame, split: str = "mean"
) -> RiskGroups:
    """Risk groups over all test folds of one model, each fold split at its own training risk."""
    col = "train_risk_mean" if split == "mean" else "train_risk_median"
    thr = predictions.merge(
        selection[["aggregator", "modalities", "model", "fold", col]],
        on=["aggregator", "modalities", "model", "fold"],
        how="left",
    )[col].to_numpy()
    high = predictions["risk"].to_numpy() > thr
    return _groups(high, predictions["time"], predictions["event"], thr, split)


# ----------------------------------------------------------------------------- run directory


def _atomic_write_text(path: Path, text: str) -> None:
    write_text(path, text)


def _atomic_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _read_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.exists():
        raise RadiopathInputError("run.json is missing: not a training run directory", path=path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RadiopathInputError(f"run.json is not valid JSON ({exc})", path=path) from exc
    cfg = record.get("config")
    if not isinstance(cfg, Mapping):
        raise RadiopathInputError("run.json has no 'config' mapping", path=path, field="config")
    for key in ("aggregator", "modalities"):
        if key not in cfg:
            raise RadiopathInputError(f"run.json config lacks '{key}'", path=path, field=key)
    return record


def _write_record(run_dir: Path, evaluation: dict) -> None:
    """Set the ``evaluation`` key of run.json, keeping everything training wrote."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record["evaluation"] = evaluation
    _atomic_write_text(path, json.dumps(record, indent=2, default=str))


def _fold_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "embeddings"
    files = sorted(folder.glob("fold_*.npz"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    if not files:
        raise RadiopathInputError(
            "no fold embeddings (embeddings/fold_<k>.npz) in the run", path=folder
        )
    return files


def _km_figure(predictions: pd.DataFrame, selection: pd.DataFrame, title: str) -> Figure:
    fig = Figure(figsize=(10, 4))
    for i, split in enumerate(("mean", "median")):
        ax = fig.add_subplot(1, 2, i + 1)
        pooled_risk_groups(predictions, selection, split).plot(ax=ax, title=title)
    fig.tight_layout()
    return fig


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def survival_table(
    result: EvaluationResult, aggregator: str, modalities: str, horizons: Sequence[float] = ()
) -> pd.DataFrame:
    """Test patients' predicted survival at each fold's time grid and at ``horizons``.

    The grid is the one the fold's C-AUC and IBS use (:class:`PreparedFold.times`); a
    horizon outside the domain of a fold's survival function (beyond its training
    follow-up) is left out for that fold.
    """
    by_fold = {p.fold: p for p in result.prepared}
    frames = []
    for (model, fold), fm in result.fitted.items():
        if model not in SURVIVAL_FUNCTION_MODELS or fm.estimator is None:
            continue
        prep = by_fold[fold]
        columns: dict[float, np.ndarray] = {}
        if prep.times is not None and fm.test_survival is not None:
            columns.update(zip(prep.times.tolist(), np.asarray(fm.test_survival).T))
        extra = [h for h in horizons if h not in columns]
        if extra:
            functions = fm.estimator.predict_survival_function(prep.X_test)
            for h in extra:
                try:
                    columns[h] = np.array([float(fn(h)) for fn in functions])
                except ValueError as exc:
                    log.info("%s fold %d: no survival at horizon %g (%s)", model, fold, h, exc)
        for t, values in sorted(columns.items()):
            frames.append(
                pd.DataFrame(
                    {
                        "aggregator": aggregator,
                        "modalities": modalities,
                        "model": model,
                        "fold": fold,
                        "patient_id": prep.test_ids,
                        "t": float(t),
                        "survival": values,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=SURVIVAL_COLUMNS)
    return pd.concat(frames, ignore_index=True)[SURVIVAL_COLUMNS]


def evaluate_run(
    run_dir: str | os.PathLike,
    models: Sequence[str] | None = None,
    backend: str = "sksurv",
    config: Mapping | None = None,
    device="auto",
    *,
    resume: bool = True,
    aggregator: str | None = None,
) -> EvaluationResult:
    """Evaluate a training run directory and write the outputs of ``INTERFACE.md`` into it.

    Reads ``run.json`` (``config.aggregator``, ``config.modalities``, ``seed``, and an
    optional ``config.evaluation`` section) and ``embeddings/fold_<k>.npz``; writes
    ``predictions.csv``, ``metrics.csv``, ``selection.csv``, ``survival.csv``, ``summary.md`` and
    ``figures/km_<aggregator>_<model>.png``; records itself under the ``evaluation`` key of
    ``run.json`` (training's record is kept). With ``resume``, a finished evaluation of the
    same models, backend and configuration is read back instead of recomputed.
    ``aggregator`` names the run in the tables (default: the run's own aggregator; the
    benchmark's variants such as ``abmil_mil`` train ``abmil`` under another name).
    """
    run_dir = Path(run_dir)
    with RunLock(run_dir, command="evaluate"):
        return _evaluate_run(run_dir, models, backend, config, device, resume, aggregator)


def _evaluate_run(run_dir, models, backend, config, device, resume, aggregator):
    record = _read_run(run_dir)
    run_cfg = record["config"]
    aggregator = str(aggregator or run_cfg["aggregator"])
    modalities = run_cfg["modalities"]
    mods = modalities if isinstance(modalities, str) else "+".join(modalities)
    seed = int(record.get("seed") or 0)
    base = run_cfg.get("evaluation") or {}
    merged = deep_merge(base, (config or {}).get("evaluation", config or {}))
    cfg = resolve_evaluation_config(merged)
    models = list(models or MODELS)
    files = _fold_files(run_dir)
    settings = {"models": models, "backend": backend, "config": cfg, "aggregator": aggregator}
    previous = record.get("evaluation") or {}
    outputs = [
        run_dir / n for n in ("predictions.csv", "metrics.csv", "selection.csv", "survival.csv")
    ]
    inputs = digests(run_dir, files)
    same_settings = json.loads(json.dumps(previous.get("settings"), default=str)) == json.loads(
        json.dumps(settings, default=str)
    )
    reusable = resume and previous.get("status") == "finished" and same_settings
    if reusable and "inputs" in previous:
        # Fold embeddings re-exported since (a retrained fold, another importance trace):
        # the evaluation depends on them, so it runs again.
        changed = sorted(set(previous["inputs"].items()) ^ set(inputs.items()))
        if changed:
            log.warning(
                "%s: the fold embeddings changed since the evaluation (%s); evaluating again",
                run_dir,
                ", ".join(sorted({k for k, _ in changed})),
            )
            reusable = False
    if reusable:
        recorded = previous.get("digests") or {}
        bad = (
            verify_digests(run_dir, recorded)
            if recorded
            else [str(p.relative_to(run_dir)) for p in outputs if not p.exists()]
        )
        if bad:
            log.warning(
                "%s: %s missing, truncated or changed since the evaluation finished; "
                "evaluating again",
                run_dir,
                ", ".join(bad),
            )
            reusable = False
    if reusable:
        log.info(
            "evaluation of %s already finished with the same settings; reading it back", run_dir
        )
        pred = pd.read_csv(outputs[0], dtype={"patient_id": str, "modalities": str})
        met = pd.read_csv(outputs[1], dtype={"modalities": str}, keep_default_na=True)
        sel = pd.read_csv(outputs[2], dtype={"modalities": str})
        met["message"] = met["message"].fillna("")
        return EvaluationResult(pred, met, sel)

    folds = []
    for f in files:
        folds.append(read_fold_embeddings(f))
    evaluation = {
        "status": "running",
        "started": _now(),
        "finished": None,
        "settings": settings,
        "device": str(device),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "fold_files": [str(f.relative_to(run_dir)) for f in files],
    }
    _write_record(run_dir, copy.deepcopy(evaluation))
    try:
        result = evaluate_folds(
            folds,
            aggregator=aggregator,
            modalities=modalities,
            models=models,
            backend=backend,
            config=cfg,
            device=device,
            seed=seed,
            cache_dir=run_dir / ".evaluation_units",
        )
        _atomic_csv(run_dir / "predictions.csv", result.predictions[PREDICTION_COLUMNS])
        _atomic_csv(run_dir / "metrics.csv", result.metrics[METRIC_COLUMNS])
        _atomic_csv(run_dir / "selection.csv", result.selection[SELECTION_COLUMNS])
        _atomic_csv(
            run_dir / "survival.csv",
            survival_table(result, aggregator, mods, cfg["metrics"]["horizons"]),
        )
        _atomic_write_text(run_dir / "summary.md", summarize(result.metrics))
        fig_dir = run_dir / "figures"
        fig_dir.mkdir(exist_ok=True)
        figures = []
        for m in models:
            pred = result.predictions[result.predictions["model"] == m]
            if pred.empty:
                continue
            path = fig_dir / f"km_{aggregator}_{m}.png"
            fig = _km_figure(
                pred, result.selection, f"{aggregator} ({mods}), {MODEL_LABELS.get(m, m)}"
            )
            with atomic_path(path) as tmp:
                fig.savefig(tmp, dpi=120, format="png")
            figures.append(str(path.relative_to(run_dir)))
    except Exception as exc:
        evaluation.update(status="failed", finished=_now(), error=f"{type(exc).__name__}: {exc}")
        _write_record(run_dir, evaluation)
        raise
    n_failed = int(result.metrics["value"].isna().sum())
    evaluation.update(
        status="finished",
        finished=_now(),
        outputs=[
            "predictions.csv",
            "metrics.csv",
            "selection.csv",
            "survival.csv",
            "summary.md",
            *figures,
        ],
        failed_metric_rows=n_failed,
        inputs=inputs,
        digests=digests(run_dir, outputs),
    )
    _write_record(run_dir, evaluation)
    shutil.rmtree(run_dir / ".evaluation_units", ignore_errors=True)  # finished: not needed
    return result
