"""What the report's tables show, as plain data for the template.

:func:`study_tables` turns ``metrics.csv`` (and, when the statistics were computed,
``intervals.csv`` and ``comparisons.csv``) into one :class:`StudyTable` per modality set:
a row per aggregator and metric, a cell per downstream model plus the average over models,
each cell with its mean (sd) over folds, bootstrap interval, whether it is the best
aggregator of its study and whether that win is significant. The numbers and rules are
those of ``summary.md`` (:mod:`radiopath.evaluation.tables`), so the page and the markdown
agree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import METRICS, lower_is_better
from radiopath.evaluation.tables import (
    METRIC_LABELS,
    MODEL_LABELS,
    _beats,
    _metric_label,
    _modality_setup,
    _with_average,
    fold_statistics,
)


def read_table(path: Path, need: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV table of a run, with the columns ``need`` (an error names the file)."""
    try:
        table = pd.read_csv(path, dtype={"patient_id": str, "modalities": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RadiopathInputError(f"not a readable CSV table ({exc})", path=path) from exc
    missing = sorted(set(need) - set(table.columns))
    if missing:
        raise RadiopathInputError(f"missing columns {missing}", path=path)
    return table


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """``metrics.csv`` of a run, checked for its columns (the error names the file)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise RadiopathInputError(
            "no metrics.csv: evaluate the run first (radiopath evaluate / benchmark)", path=path
        )
    return read_table(path, ["aggregator", "modalities", "model", "fold", "metric", "value"])


@dataclass
class Cell:
    """One study of one aggregator: mean (sd) over folds and its interval."""

    mean: float | None
    sd: float | None = None
    n_valid: int = 0
    n_folds: int = 0
    ci_low: float | None = None
    ci_high: float | None = None
    best: bool = False
    significant: bool = False

    @property
    def text(self) -> str:
        if self.mean is None:
            return "n/a" if self.n_folds == 0 else "failed"
        sd = "" if self.sd is None else f" ({self.sd:.3f})"
        return f"{self.mean:.3f}{sd}"

    @property
    def interval(self) -> str:
        return "" if self.ci_low is None else f"[{self.ci_low:.3f}, {self.ci_high:.3f}]"

    @property
    def partial(self) -> str:
        """``"4/5 folds"`` when some folds failed."""
        return f"{self.n_valid}/{self.n_folds} folds" if 0 < self.n_valid < self.n_folds else ""


@dataclass
class Row:
    aggregator: str
    metric: str
    label: str
    cells: list[Cell]


@dataclass
class StudyTable:
    """The table of one modality set, with its win counts and paired differences."""

    modalities: str
    columns: list[str]
    column_labels: list[str]
    rows: list[Row]
    n_studies: int
    wins: list[dict]
    differences: list[dict] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)
    horizons: list[Row] = field(default_factory=list)


def _finite(value) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _cell(row: dict | None, interval: dict | None) -> Cell:
    if row is None:
        return Cell(mean=None)
    valid = int(row["n_valid"])
    cell = Cell(
        mean=_finite(row["mean"]) if valid else None,
        sd=_finite(row["sd"]) if valid else None,
        n_valid=valid,
        n_folds=int(row["n_folds"]),
    )
    if interval is not None and valid:
        cell.ci_low, cell.ci_high = _finite(interval["ci_low"]), _finite(interval["ci_high"])
        if cell.ci_low is None or cell.ci_high is None:
            cell.ci_low = cell.ci_high = None
    return cell


def _keyed(frame: pd.DataFrame | None, keys: list[str]) -> dict[tuple, dict]:
    if frame is None or frame.empty:
        return {}
    records = frame.assign(modalities=frame["modalities"].astype(str)).to_dict("records")
    return {tuple(r[k] for k in keys): r for r in records}


def _main_rows(mods, aggs, cols, lookup, best, inter, pairs, alpha) -> list[Row]:
    rows = []
    for a in aggs:
        for k in METRICS:
            if not any((a, m, k) in lookup for m in cols):
                continue
            cells = []
            for m in cols:
                cell = _cell(lookup.get((a, m, k)), inter.get((mods, a, m, k)))
                cell.best = a in best.get((m, k), set())
                if cell.best and pairs:
                    others = [b for b in aggs if b != a]
                    cell.significant = _beats(pairs, a, others, (m, k), alpha, lower_is_better(k))
                cells.append(cell)
            rows.append(Row(a, k, METRIC_LABELS[k], cells))
    return rows


def _horizon_rows(mods, aggs, cols, intervals: pd.DataFrame | None) -> list[Row]:
    if intervals is None or intervals.empty:
        return []
    sub = intervals[
        (intervals["modalities"].astype(str) == mods) & intervals["metric"].str.contains("@")
    ]
    look = _keyed(sub, ["aggregator", "model", "metric"])
    rows = []
    for a in aggs:
        for k in dict.fromkeys(sub["metric"]):
            cells = []
            for m in cols:
                r = look.get((a, m, k))
                est = None if r is None else _finite(r["estimate"])
                cell = Cell(mean=est, n_valid=int(est is not None), n_folds=1)
                if est is not None:
                    cell.ci_low, cell.ci_high = _finite(r["ci_low"]), _finite(r["ci_high"])
                cells.append(cell)
            rows.append(Row(a, k, _metric_label(k), cells))
    return rows


def _difference_rows(comparisons, mods, study_list, alpha) -> tuple[list[str], list[dict]]:
    if comparisons is None or comparisons.empty:
        return [], []
    sub = comparisons[comparisons["modalities"].astype(str) == mods]
    names = list(dict.fromkeys(zip(sub["aggregator_a"], sub["aggregator_b"])))
    look = _keyed(sub, ["aggregator_a", "aggregator_b", "model", "metric"])
    extra = [k for k in dict.fromkeys(zip(sub["model"], sub["metric"])) if k not in study_list]
    rows = []
    for m, k in [*study_list, *extra]:
        cells = []
        for a, b in names:
            r = look.get((a, b, m, k))
            if r is None or not np.isfinite(r["delta"]):
                cells.append(None)
                continue
            cells.append(
                {
                    "delta": float(r["delta"]),
                    "ci_low": float(r["ci_low"]),
                    "ci_high": float(r["ci_high"]),
                    "p": float(r["p"]),
                    "p_holm": float(r["p_holm"]),
                    "significant": bool(np.isfinite(r["p_holm"]) and r["p_holm"] < alpha),
                }
            )
        label = f"{MODEL_LABELS.get(m, m)} {_metric_label(k)}"
        rows.append({"model": m, "metric": k, "label": label, "cells": cells})
    return [f"{a} - {b}" for a, b in names], rows


def _win_rows(aggs, study_list, best, pairs, alpha) -> list[dict]:
    if len(aggs) < 2:
        return []
    wins = []
    for a in aggs:
        won = [s for s in study_list if a in best[s]]
        others = [b for b in aggs if b != a]
        sig = None
        if pairs:
            sig = sum(_beats(pairs, a, others, s, alpha, lower_is_better(s[1])) for s in won)
        wins.append({"aggregator": a, "wins": len(won), "significant": sig})
    return sorted(wins, key=lambda w: -w["wins"])


def study_tables(
    metrics: pd.DataFrame,
    intervals: pd.DataFrame | None = None,
    comparisons: pd.DataFrame | None = None,
    alpha: float = 0.05,
) -> list[StudyTable]:
    """One :class:`StudyTable` per modality set of ``metrics.csv``.

    Parameters
    ----------
    metrics
        ``aggregator, modalities, model, fold, metric, value`` (``metrics.csv``).
    intervals, comparisons
        ``intervals.csv`` and ``comparisons.csv`` of the same run, or None when the run
        has no statistics (then no intervals and no significance marks).
    alpha
        Level of the tests: a best cell is significant when its aggregator beats every
        other one of the study with a Holm-adjusted paired bootstrap p below ``alpha``.
    """
    df = metrics.assign(
        modalities=metrics["modalities"].astype(str),
        aggregator=metrics["aggregator"].astype(str),
        value=pd.to_numeric(metrics["value"], errors="coerce"),
    )
    stats = _with_average(fold_statistics(df))
    inter = _keyed(intervals, ["modalities", "aggregator", "model", "metric"])
    tables = []
    for mods in dict.fromkeys(stats["modalities"]):
        aggs, models, study_list, lookup, best = _modality_setup(stats[stats["modalities"] == mods])
        pairs = {
            key[1:]: r
            for key, r in _keyed(
                comparisons, ["modalities", "aggregator_a", "aggregator_b", "model", "metric"]
            ).items()
            if key[0] == mods
        }
        cols = [*models, "avg"]
        names, differences = _difference_rows(comparisons, mods, study_list, alpha)
        tables.append(
            StudyTable(
                modalities=mods,
                columns=cols,
                column_labels=[MODEL_LABELS.get(m, m) for m in cols],
                rows=_main_rows(mods, aggs, cols, lookup, best, inter, pairs, alpha),
                n_studies=len(study_list),
                wins=_win_rows(aggs, study_list, best, pairs, alpha),
                differences=differences,
                pairs=names,
                horizons=_horizon_rows(mods, aggs, cols, intervals),
            )
        )
    return tables


def failed_fits(metrics: pd.DataFrame, selection: pd.DataFrame | None = None) -> list[dict]:
    """Folds whose metric is undefined or whose model fit failed, with their messages."""
    out = []
    values = pd.to_numeric(metrics["value"], errors="coerce")
    failed = metrics[values.isna()]
    message = "message" if "message" in failed.columns else None
    for (a, mods, m, f), rows in failed.groupby(
        ["aggregator", "modalities", "model", "fold"], sort=False
    ):
        msgs = sorted(set(rows[message].fillna("").astype(str)) - {""}) if message else []
        out.append(
            {
                "where": f"{a} / {mods} / {MODEL_LABELS.get(m, m)} / fold {f}",
                "what": ", ".join(METRIC_LABELS.get(k, k) for k in rows["metric"]),
                "message": "; ".join(msgs),
            }
        )
    if selection is not None and "status" in selection.columns:
        bad = selection[selection["status"].astype(str) != "ok"]
        for r in bad.to_dict("records"):
            out.append(
                {
                    "where": f"{r['aggregator']} / {r['modalities']} / "
                    f"{MODEL_LABELS.get(r['model'], r['model'])} / fold {r['fold']}",
                    "what": f"model selection: {r['status']}",
                    "message": "" if pd.isna(r.get("message")) else str(r.get("message")),
                }
            )
    return out
