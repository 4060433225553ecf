"""The report's clinical baselines and fixed-horizon endpoint, read from the files the
benchmark's clinical stage wrote (:mod:`radiopath.clinical.stage`): ``clinical/baselines.csv``,
``clinical/cox.csv`` and ``horizon_metrics.csv``. Absent files give empty tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from radiopath.evaluation.config import ordered_aggregators

HORIZON_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "pr_auc")


@dataclass
class ClinicalSection:
    """What the page and ``summary.md`` show (each a list of row dicts)."""

    baselines: list[dict] = field(default_factory=list)
    cox: list[dict] = field(default_factory=list)
    lr_tests: list[dict] = field(default_factory=list)
    horizon: list[dict] = field(default_factory=list)
    horizon_time: float | None = None
    horizon_rule: str = ""

    @property
    def empty(self) -> bool:
        return not (self.baselines or self.cox or self.horizon)


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows with NaN as None (the page's ``num`` filter prints n/a)."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def read_clinical_section(run_dir: Path) -> ClinicalSection:
    """The clinical tables of a run folder."""
    section = ClinicalSection()
    baselines = _read(run_dir / "clinical" / "baselines.csv")
    if baselines is not None:
        section.baselines = _records(baselines.fillna({"note": "", "score": ""}))
    cox = _read(run_dir / "clinical" / "cox.csv")
    if cox is not None and not cox.empty:
        order = ordered_aggregators(cox.aggregator)
        with_risk = cox[cox.model == "clinical+risk"]
        section.cox = _records(
            with_risk.sort_values("aggregator", key=lambda s: s.map(order.index))
        )
        tests = with_risk.groupby("aggregator", sort=False)[
            ["lr_chi2", "lr_df", "lr_p", "n", "n_events"]
        ].first()
        section.lr_tests = _records(tests.loc[order].reset_index())
    horizon = _read(run_dir / "horizon_metrics.csv")
    if horizon is not None and not horizon.empty:
        section.horizon_time = float(horizon.horizon.iloc[0])
        section.horizon_rule = str(horizon.threshold_rule.iloc[0])
        pooled = horizon[horizon.fold.astype(str) == "all"]
        folds = horizon[horizon.fold.astype(str) != "all"]
        for agg in ordered_aggregators(horizon.aggregator):
            row = {"aggregator": agg, "n_used": int(pooled[pooled.aggregator == agg].n_used.mean())}
            for metric in HORIZON_METRICS:
                per_fold = folds.loc[folds.aggregator == agg, metric]
                row[metric] = pooled.loc[pooled.aggregator == agg, metric].mean()
                row[f"{metric}_fold_sd"] = per_fold.std(ddof=1) if per_fold.size > 1 else None
            section.horizon.append(_records(pd.DataFrame([row]))[0])
    return section


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def clinical_markdown(section: ClinicalSection) -> str:
    """The section's tables for ``summary.md`` (empty text when there is nothing)."""
    lines: list[str] = []
    if section.horizon:
        lines += [
            f"## Fixed-horizon endpoint (event by t = {section.horizon_time:g}; threshold: "
            f"{section.horizon_rule})",
            "",
            "Out-of-fold risks of each aggregator's own model, pooled over folds (sd over folds).",
            "",
            "| aggregator | n | " + " | ".join(HORIZON_METRICS) + " |",
            "|---|---|" + "---|" * len(HORIZON_METRICS),
        ]
        for row in section.horizon:
            cells = [f"{_fmt(row[m])} ({_fmt(row[f'{m}_fold_sd'])})" for m in HORIZON_METRICS]
            lines.append(f"| {row['aggregator']} | {row['n_used']} | " + " | ".join(cells) + " |")
        lines.append("")
    if section.baselines:
        lines += [
            "## Clinical baselines",
            "",
            "Each clinical column as a risk score (higher = higher risk): Harrell's C and the "
            "C-index with ties broken at random (mean (sd) over draws). clinical/baselines.csv.",
            "",
            "| column | kind | n | Harrell C | random-ties C | note |",
            "|---|---|---|---|---|---|",
        ]
        for row in section.baselines:
            n = "" if row.get("n") is None else int(row["n"])
            ties = f"{_fmt(row.get('c_index_random_ties'))} ({_fmt(row.get('c_index_random_ties_sd'))})"
            lines.append(
                f"| {row['column']} | {row['kind']} | {n} | {_fmt(row.get('c_index'))} | "
                f"{ties} | {row.get('note') or ''} |"
            )
        lines.append("")
    if section.lr_tests:
        lines += [
            "Does the image risk add to the clinical factors? Cox model of the clinical columns "
            "with and without each aggregator's out-of-fold risk (z-scored per fold), "
            "likelihood-ratio test (clinical/cox.csv):",
            "",
            "| aggregator | HR of risk (95% CI) | LR chi2 | df | p |",
            "|---|---|---|---|---|",
        ]
        hr = {r["aggregator"]: r for r in section.cox if r["term"] == "risk"}
        for row in section.lr_tests:
            r = hr.get(row["aggregator"], {})
            lines.append(
                f"| {row['aggregator']} | {_fmt(r.get('hazard_ratio'), 2)} "
                f"({_fmt(r.get('hr_ci_low'), 2)}-{_fmt(r.get('hr_ci_high'), 2)}) | "
                f"{_fmt(row['lr_chi2'], 2)} | {int(row['lr_df'])} | {row['lr_p']:.3g} |"
            )
        lines.append("")
    return "\n".join(lines)
