"""The report's modality weights: how much each modality counted in each patient's vector,
read from ``runs/<aggregator>/fusion_weights.csv`` (``mean`` and ``attention`` fusion, see
:mod:`radiopath.models.fusion`). No such file gives an empty table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from radiopath.evaluation.config import ordered_aggregators


def read_fusion_weights(run_dir: Path) -> list[dict]:
    """One row per (aggregator, modality): the mean, standard deviation, minimum and maximum
    of the modality's weight over the test patients, and how many patients had it."""
    paths = sorted((run_dir / "runs").glob("*/fusion_weights.csv"))
    rows = []
    for agg in ordered_aggregators([p.parent.name for p in paths]):
        table = pd.read_csv(run_dir / "runs" / agg / "fusion_weights.csv")
        for col in (c for c in table.columns if c.startswith("weight_")):
            w = table[col]
            rows.append(
                {
                    "aggregator": agg,
                    "modality": col.removeprefix("weight_"),
                    "mean": float(w.mean()),
                    "sd": float(w.std(ddof=0)),
                    "min": float(w.min()),
                    "max": float(w.max()),
                    "with_weight": int((w > 0).sum()),
                    "patients": len(w),
                }
            )
    return rows


def fusion_markdown(rows: list[dict]) -> str:
    """The weights as a ``summary.md`` section."""
    lines = [
        "## Modality weights (fusion)",
        "",
        "Each modality's weight in the test patients' vectors (fusion_weights.csv); a "
        "patient without a modality gives it no weight.",
        "",
        "| aggregator | modality | mean | sd | min | max | patients with weight |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['aggregator']} | {r['modality']} | {r['mean']:.3f} | {r['sd']:.3f} | "
        f"{r['min']:.3f} | {r['max']:.3f} | {r['with_weight']}/{r['patients']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
