"""Checks shared by the training tests on a finished run's exports."""

from __future__ import annotations

import pandas as pd
import pytest


def assert_contributions_add_up(result, aggregator: str = "sparra", modalities=("wsi", "ct")):
    """Signed patch contributions of every modality plus the offset give the exported risk,
    and SPARRA's posterior is defined exactly on the nodes that carry weight."""
    offsets = pd.read_csv(
        result.out_dir / "importance" / f"{aggregator}.risk_offsets.csv",
        dtype={"patient_id": str},
    ).set_index("patient_id")
    risks = result.risks.set_index("patient_id")["risk"]
    assert set(offsets.index) == set(risks.index)
    for pid, row in offsets.iterrows():
        total = row["risk_offset"]
        for m in modalities:
            table = pd.read_csv(result.importance_path(pid, m))
            total += table["contribution"].sum()
            kept = table["importance"] > 0
            assert table.loc[kept, "s_sd"].ge(0).all() and table.loc[~kept, "s_mean"].isna().all()
        assert total == pytest.approx(risks[pid], abs=1e-4)
        assert row["risk"] == pytest.approx(risks[pid], abs=1e-5)
