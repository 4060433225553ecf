"""The demo's pixel path: synthetic slides and CT -> extract -> benchmark -> recovery and maps."""

from __future__ import annotations

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
