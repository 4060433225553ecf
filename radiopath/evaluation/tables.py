"""The markdown tables of the downstream evaluation: per-study mean (sd), wins, differences.

:func:`summarize` is the paper's Table 1 in markdown -- per-study mean (sd) over folds, the
average over models, and which aggregator wins how many of the 19 studies -- with, when
given, the bootstrap intervals and paired tests of :mod:`radiopath.evaluation.stats`.
Part of :mod:`radiopath.evaluation.report`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import (
    EXTRA_METRICS,
    METRICS,
    MODELS,
    SURVIVAL_FUNCTION_MODELS,
    lower_is_better,
    ordered_aggregators,
)

__all__ = ["fold_statistics", "studies", "summarize", "summary_blocks", "win_counts"]

METRIC_LABELS = {
    "c_index": "C-index",
    "c_ipcw": "C-IPCW",
    "c_auc": "C-AUC",
    "ibs": "IBS",
    "c_index_random_ties": "C-index (random ties)",
}
MODEL_LABELS = {"rsf": "RSF", "coxph": "CoxPH", "coxnet": "Coxnet", "fsvm": "FSVM", "avg": "Avg."}


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
