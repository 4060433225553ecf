"""The report's modality-weight table, from the runs' fusion_weights.csv."""

from __future__ import annotations

import pandas as pd
import pytest

from radiopath.report.fusion import fusion_markdown, read_fusion_weights


def test_weights_are_summarised_per_aggregator_and_modality(tmp_path):
    for agg, w in (("mean", [0.5, 0.5, 1.0]), ("sparra", [0.9, 0.2, 0.0])):
        run = tmp_path / "runs" / agg
        run.mkdir(parents=True)
        pd.DataFrame(
            {
                "patient_id": ["a", "b", "c"],
                "fold": [0, 0, 1],
                "weight_wsi": w,
                "weight_ct": [1 - x for x in w],
            }
        ).to_csv(run / "fusion_weights.csv", index=False)
    (tmp_path / "runs" / "abmil").mkdir()  # concat fusion: no weights file
    rows = read_fusion_weights(tmp_path)
    # the tables' aggregator order (baselines first, SPARRA last)
    assert [(r["aggregator"], r["modality"]) for r in rows] == [
        ("mean", "wsi"),
        ("mean", "ct"),
        ("sparra", "wsi"),
        ("sparra", "ct"),
    ]
    sparra_wsi = rows[2]
    assert sparra_wsi["mean"] == pytest.approx(1.1 / 3)
    assert sparra_wsi["sd"] == pytest.approx(pd.Series([0.9, 0.2, 0.0]).std(ddof=0))
    assert (sparra_wsi["with_weight"], sparra_wsi["patients"]) == (2, 3)
    text = fusion_markdown(rows)
    assert "| sparra | wsi | 0.367 |" in text and "2/3" in text


def test_no_weights_file_gives_no_table(tmp_path):
    (tmp_path / "runs" / "sparra").mkdir(parents=True)
    assert read_fusion_weights(tmp_path) == []
