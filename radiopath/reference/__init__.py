"""Published results shipped as reference data, to be read beside a run of radiopath.

``radiopath report --reference sparra-table1`` prints the published table (summarised the
way radiopath summarises a run); with ``--run DIR`` it prints the run's table beside it. Each
reference is a CSV in this folder (``aggregator, model, metric, mean, sd``; ``model = avg``
rows are the averages over models as printed) with a note on its source (``<name>.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from radiopath.errors import RadiopathInputError

__all__ = ["REFERENCES", "Reference", "beside_reference", "load_reference", "summarize_reference"]

REFERENCES: dict[str, dict] = {
    "sparra-table1": {
        "file": "sparra_table1.csv",
        "note": "sparra_table1.md",
        "title": "Gao et al., MICCAI 2025 (SPARRA), Table 1: SegVol ViT + UNI, radiopathomics",
        "modalities": "wsi+ct",
        "n_folds": 5,
        "claim": "SPARRA outperforms the other aggregation methods in 14 out of 19 studies",
        # radiopath's aggregator -> the paper's row it is read beside
        "counterpart": {
            "raw_mean": "mean",
            "mean": "mean",
            "abmil_mil": "abmil",
            "abmil": "abmil",
            "sparra": "sparra",
        },
    }
}


@dataclass
class Reference:
    """One published table: its rows as printed, its source note and how to read it."""

    name: str
    table: pd.DataFrame  # aggregator, model, metric, mean, sd (avg rows as printed)
    note: str
    info: dict

    def statistics(self) -> pd.DataFrame:
        """The per-model rows in the form :func:`radiopath.evaluation.report.summary_blocks`
        reads (``modalities, aggregator, model, metric, mean, sd, n_valid, n_folds``), with the
        average over models recomputed from them, as radiopath does for a run."""
        from radiopath.evaluation.report import _with_average

        rows = self.table[self.table["model"] != "avg"].assign(
            modalities=self.info["modalities"],
            n_valid=self.info["n_folds"],
            n_folds=self.info["n_folds"],
        )
        cols = ["modalities", "aggregator", "model", "metric", "mean", "sd", "n_valid", "n_folds"]
        return _with_average(rows[cols].reset_index(drop=True))


def load_reference(name: str) -> Reference:
    """A shipped reference by name (see :data:`REFERENCES`)."""
    if name not in REFERENCES:
        raise RadiopathInputError(
            f"unknown reference {name!r}; choose from {sorted(REFERENCES)}", field="reference"
        )
    info = REFERENCES[name]
    folder = resources.files(__name__)
    with resources.as_file(folder / info["file"]) as path:
        table = pd.read_csv(path)
    note = (folder / info["note"]).read_text()
    return Reference(name, table, note, info)


def summarize_reference(name: str) -> str:
    """The published table as radiopath summarises a run: means (sd), bold best, win counts."""
    from radiopath.evaluation.report import summary_blocks

    ref = load_reference(name)
    lines = [
        f"# Reference {name}: {ref.info['title']}",
        "",
        f"Mean (sd) over {ref.info['n_folds']} folds as published; Avg. recomputed as the mean "
        "of the models' means (sd: mean of their sds). No interval or test can be computed "
        "from means and sds alone.",
    ]
    lines += summary_blocks(
        ref.statistics(), untested="a published table has no per-patient predictions to test"
    )
    lines += ["", f'The paper says: "{ref.info["claim"]}".']
    return "\n".join(lines) + "\n"


def _pair_cell(ours, paper) -> str:
    def fmt(row):
        if row is None or not np.isfinite(row["mean"]) or row.get("n_valid", 1) == 0:
            return "n/a"
        return f"{row['mean']:.3f}"

    return f"{fmt(ours)} / {fmt(paper)}"


def beside_reference(metrics: pd.DataFrame, name: str) -> str:
    """Markdown: a run's mean over folds beside the published mean, ``ours / paper``.

    Each of the run's aggregators is read beside its counterpart in the paper
    (``raw_mean`` and ``mean`` beside Mean, ``abmil_mil`` and ``abmil`` beside ABMIL).
    """
    from radiopath.evaluation.config import METRICS, MODELS, ordered_aggregators
    from radiopath.evaluation.report import (
        METRIC_LABELS,
        _with_average,
        fold_statistics,
        table_head,
    )

    ref = load_reference(name)
    paper = {
        (r["aggregator"], r["model"], r["metric"]): r for r in ref.statistics().to_dict("records")
    }
    df = metrics.assign(
        modalities=metrics["modalities"].astype(str),
        value=pd.to_numeric(metrics["value"], errors="coerce"),
    )
    ours_all = _with_average(fold_statistics(df))
    counterpart = ref.info["counterpart"]
    lines = [
        f"# Beside {name}: {ref.info['title']}",
        "",
        "Mean over folds: ours / paper. The paper's rows are read beside "
        + ", ".join(f"{a} -> {p}" for a, p in counterpart.items())
        + f"; the paper's modalities are {ref.info['modalities']}.",
    ]
    for mods in dict.fromkeys(ours_all["modalities"]):
        ours = {
            (r["aggregator"], r["model"], r["metric"]): r
            for r in ours_all[ours_all["modalities"] == mods].to_dict("records")
        }
        aggs = [a for a in ordered_aggregators(a for a, _, _ in ours) if a in counterpart]
        cols = [*MODELS, "avg"]
        lines += [
            "",
            f"## Modalities: {mods}",
            "",
            *table_head("Aggregator (paper)", cols),
        ]
        for a in aggs:
            p = counterpart[a]
            for k in METRICS:
                cells = [_pair_cell(ours.get((a, m, k)), paper.get((p, m, k))) for m in cols]
                lines.append(f"| {a} ({p}) | {METRIC_LABELS[k]} | " + " | ".join(cells) + " |")
        skipped = sorted({a for a, _, _ in ours} - set(counterpart))
        if skipped:
            lines += ["", f"No counterpart in the paper: {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"
