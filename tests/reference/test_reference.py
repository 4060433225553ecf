"""The published Table 1 shipped as reference data: it round-trips to the paper's averages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from radiopath.cli import main
from radiopath.errors import RadiopathInputError
from radiopath.reference import beside_reference, load_reference, summarize_reference


def test_table1_round_trips_to_the_papers_averages():
    ref = load_reference("sparra-table1")
    assert len(ref.table) == 3 * 19  # 19 cells per aggregator, the average included
    assert "MICCAI 2025" in ref.note
    stats = ref.statistics()
    printed = ref.table[ref.table.model == "avg"].set_index(["aggregator", "metric"])
    ours = stats[stats.model == "avg"].set_index(["aggregator", "metric"])
    assert len(printed) == len(ours) == 12
    for key, row in printed.iterrows():
        # inputs are rounded to 3 decimals, so the recomputed averages may differ by 0.0005
        assert abs(ours.loc[key, "mean"] - row["mean"]) <= 0.0005 + 1e-12, key
        assert abs(ours.loc[key, "sd"] - row["sd"]) <= 0.0005 + 1e-12, key
    c_index = ours.xs("c_index", level="metric")["mean"]
    assert [round(c_index[a] + 1e-9, 3) for a in ("mean", "abmil", "sparra")] == [
        0.623,
        0.615,
        0.707,
    ]


def test_counting_the_published_means_gives_13_not_14():
    text = summarize_reference("sparra-table1")
    assert "**sparra** best in 13 of 19 studies by the means, untested" in text
    assert "| mean | 4 of 19 |" in text and "| abmil | 2 of 19 |" in text
    assert "14 out of 19" in text  # the paper's claim is quoted beside the recount


def test_our_table_beside_the_paper():
    rows = []
    for agg, value in (("raw_mean", 0.60), ("sparra", 0.65), ("other", 0.5)):
        for model in ("rsf", "coxph"):
            for fold in range(3):
                rows.append(
                    dict(
                        aggregator=agg,
                        modalities="wsi+ct",
                        model=model,
                        fold=fold,
                        metric="c_index",
                        value=value,
                    )
                )
    text = beside_reference(pd.DataFrame(rows), "sparra-table1")
    assert (
        "| raw_mean (mean) | C-index | 0.600 / 0.614 | 0.600 / 0.635 | n/a / 0.614 | n/a / 0.630 | 0.600 / 0.623 |"
        in text
    )
    assert "| sparra (sparra) | C-index | 0.650 / 0.684 |" in text
    assert "No counterpart in the paper: other." in text
    with pytest.raises(RadiopathInputError, match="unknown reference 'table2'"):
        load_reference("table2")


def test_cli_prints_the_reference_and_names_a_bad_one():
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--reference", "sparra-table1"])
    assert result.exit_code == 0, result.output
    assert "0.707 (0.065)" in result.output and "13 of 19" in result.output
    bad = runner.invoke(main, ["report", "--reference", "nope"])
    assert bad.exit_code == 2 and "field 'reference'" in bad.output
    none = runner.invoke(main, ["report"])
    assert none.exit_code == 2 and "--run" in none.output
    assert np.isfinite(load_reference("sparra-table1").table["sd"]).all()
