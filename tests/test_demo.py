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


def test_importance_ceiling_is_the_auc_of_each_node_s_planted_fraction(small_cohort, small_graphs):
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from radiopath.datasets import load_planted_mask
    from radiopath.demo import importance_ceiling
    from radiopath.errors import RadiopathInputError
    from radiopath.training.data import GraphStore, manifest_source

    cohort_dir = small_cohort.parent
    table = importance_ceiling(small_graphs, cohort_dir).set_index("modality")
    assert set(table.index) == {"wsi", "ct"}
    # an independent computation: each patch scored by its node's planted share, via pandas
    load, available = manifest_source(small_graphs)
    store = GraphStore(load)
    expected = {"wsi": [], "ct": []}
    for pid, m in sorted(available):
        mask = load_planted_mask(cohort_dir, pid, m)
        if mask.all() or not mask.any():
            continue
        node = pd.Series(store.get(pid, m).assignment.numpy())
        share = pd.Series(mask.astype(float)).groupby(node).transform("mean")
        expected[m].append(roc_auc_score(mask, share))
    for m in ("wsi", "ct"):
        assert table.loc[m, "count"] == len(expected[m]) > 0
        assert table.loc[m, "mean"] == pytest.approx(np.mean(expected[m]), abs=1e-12)
    # the planted regions are spatially compact: the clustering keeps them apart
    assert table["mean"].min() > 0.9

    # a mask that is a union of whole nodes is reached exactly; one split inside every
    # node (alternate patches of each node) cannot be told apart at all
    def whole_nodes(pid, m):
        return store.get(pid, m).assignment.numpy() % 2 == 0

    def split_nodes(pid, m):
        a = store.get(pid, m).assignment.numpy()
        rank = pd.Series(a).groupby(a).cumcount().to_numpy()
        return rank % 2 == 0

    assert importance_ceiling(small_graphs, cohort_dir, whole_nodes)["mean"].tolist() == [1.0, 1.0]
    assert importance_ceiling(small_graphs, cohort_dir, split_nodes)["mean"].max() < 0.6

    def wrong_length(pid, m):
        return (
            np.zeros(3, dtype=bool) if pid == "SYN0005" else load_planted_mask(cohort_dir, pid, m)
        )

    with pytest.raises(RadiopathInputError, match="SYN0005"):
        importance_ceiling(small_graphs, cohort_dir, wrong_length)


def test_importance_ceiling_skips_an_unreadable_graph(small_cohort, small_graphs, tmp_path, caplog):
    import shutil

    from radiopath.demo import importance_ceiling
    from radiopath.graph import load_graph_manifest

    graphs = tmp_path / "graphs"
    shutil.copytree(small_graphs, graphs)
    manifest = load_graph_manifest(graphs)
    row = manifest[(manifest.patient_id == "SYN0002") & (manifest.modality == "ct")].iloc[0]
    broken = graphs / row["graph"]
    broken.write_bytes(b"not a graph")
    full = importance_ceiling(small_graphs, small_cohort.parent).set_index("modality")
    with caplog.at_level("WARNING", logger="radiopath.demo"):
        table = importance_ceiling(graphs, small_cohort.parent).set_index("modality")
    assert "SYN0002" in caplog.text
    assert table.loc["ct", "count"] == full.loc["ct", "count"] - 1
    assert table.loc["wsi", "count"] == full.loc["wsi", "count"]
