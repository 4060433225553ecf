"""The demo's pixel path: synthetic slides and CT -> extract -> benchmark -> recovery and maps."""

from __future__ import annotations

import pandas as pd
import pytest

from radiopath.demo import run_demo

TINY = {
    "folds": 3,
    "models": ["coxph"],
    "train": {"epochs": 1, "batch_size": 8},
    "evaluation": {"cv": {"n_splits": 3}},
}


@pytest.mark.slow
def test_demo_from_images(tmp_path):
    result = run_demo(
        tmp_path, n_patients=12, seed=1, config=TINY, from_images=True, progress=False
    )
    recovery = result["recovery"].set_index(["aggregator", "modality"])
    assert set(recovery.index) == {
        (a, m) for a in ("sparra", "abmil", "mean") for m in ("wsi", "ct")
    }
    assert recovery["mean"].between(0.0, 1.0).all()
    assert recovery["count"].min() > 0
    assert len(result["maps"]) == 6 and all(p.exists() for p in result["maps"])
    assert (tmp_path / "embedded" / "cohort.csv").exists()
    assert set(result["metrics"].aggregator) == {"sparra", "abmil", "mean"}


def test_describe_clinical_reads_the_clinical_stage_files(tmp_path):
    from radiopath.demo import describe_clinical

    assert describe_clinical(tmp_path) == ""
    (tmp_path / "clinical").mkdir()
    pd.DataFrame({"column": ["stage", "sex"], "c_index": [0.61234, float("nan")]}).to_csv(
        tmp_path / "clinical" / "baselines.csv", index=False
    )
    pd.DataFrame(
        {"aggregator": ["sparra", "sparra"], "lr_chi2": [12.0, 12.0], "lr_p": [0.0005, 0.0005]}
    ).to_csv(tmp_path / "clinical" / "cox.csv", index=False)
    text = describe_clinical(tmp_path)
    assert "stage 0.612" in text and "sex" not in text
    assert text.count("sparra") == 1 and "LR chi2 12.0, p 0.0005" in text
