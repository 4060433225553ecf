"""The evaluation's tables (radiopath/evaluation/tables.py): the 19 studies and summarize()'s
per-study mean (sd), averages over models, win counts and modality sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiopath.evaluation.tables import studies, summarize


def _metrics_frame(means: dict, n_folds: int = 5, sd: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Fold values with exactly the given mean per (aggregator, model, metric)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (agg, model, metric), mean in means.items():
        dev = rng.normal(size=n_folds)
        dev = (dev - dev.mean()) / dev.std(ddof=1) * sd
        for f in range(n_folds):
            rows.append(
                {
                    "aggregator": agg,
                    "modalities": "wsi+ct",
                    "model": model,
                    "fold": f,
                    "metric": metric,
                    "value": mean + dev[f],
                    "status": "ok",
                    "message": "",
                }
            )
    return pd.DataFrame(rows)


def _all_studies(agg_quality: dict) -> dict:
    means = {}
    for agg, q in agg_quality.items():
        for model in ("rsf", "coxph", "coxnet", "fsvm"):
            for metric in ("c_index", "c_ipcw", "c_auc"):
                means[(agg, model, metric)] = 0.6 + q
            if model != "fsvm":
                means[(agg, model, "ibs")] = 0.25 - q
    return means


def test_nineteen_studies():
    assert len(studies(["rsf", "coxph", "coxnet", "fsvm"])) == 19
    assert len(studies(["coxph", "fsvm"])) == 2 * 3 + 1 + 4


def test_summary_table_averages_and_wins():
    means = _all_studies({"mean": 0.0, "abmil": 0.01, "sparra": 0.05})
    # mean wins CoxPH C-IPCW and, through it, the average C-IPCW (0.675 > 0.65)
    means[("mean", "coxph", "c_ipcw")] = 0.9
    text = summarize(_metrics_frame(means))
    assert "**sparra** best in 17 of 19 studies" in text
    assert (
        "| sparra | 17 of 19 |" in text
        and "| mean | 2 of 19 |" in text
        and "| abmil | 0 of 19 |" in text
    )
    # C-IPCW average of mean: (0.6 + 0.9 + 0.6 + 0.6) / 4, with the paper's sd (mean of the sds)
    row = next(line for line in text.splitlines() if line.startswith("| mean | C-IPCW"))
    assert row.split("|")[-2].strip() == "**0.675 (0.020)**"  # and it is the best average
    assert "**0.900 (0.020)**" in row
    # IBS: lower is better, sparra's is bold, FSVM has none
    ibs = next(line for line in text.splitlines() if line.startswith("| sparra | IBS"))
    assert "**0.200 (0.020)**" in ibs and "n/a" in ibs


def test_summary_counts_failed_folds_and_several_modality_sets():
    means = _all_studies({"mean": 0.0, "sparra": 0.05})
    a = _metrics_frame(means)
    b = _metrics_frame(means).assign(modalities="wsi")
    a.loc[
        (a["aggregator"] == "sparra") & (a["model"] == "rsf") & (a["fold"] == 2),
        ["value", "status", "message"],
    ] = (np.nan, "failed", "weights too large")
    text = summarize(pd.concat([a, b]))
    assert "## Modalities: wsi+ct" in text and "## Modalities: wsi" in text
    assert "[4/5 folds]" in text
    assert "sparra / wsi+ct / rsf / fold 2" in text and "weights too large" in text
    with pytest.raises(ValueError, match="metric"):
        summarize(a.drop(columns=["metric"]))
