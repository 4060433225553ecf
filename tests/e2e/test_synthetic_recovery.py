"""End to end on the synthetic cohort: survival signal and planted regions are recovered."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from radiopath.datasets import load_planted_mask, make_synthetic_cohort
from radiopath.graph import build_cohort_graphs
from radiopath.training import train_cross_validated
from radiopath.training.faithfulness import deletion_check, load_fold_model

# Short schedule for a small cohort: 60 training patients per fold at lr 1e-3 for 60 epochs
# (the paper's 20 epochs at 3e-4 assume 164 training patients and real features).
# on one thread, as when this file lived under tests/training/
pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = {"epochs": 60, "lr": 1e-3, "batch_size": 16, "folds": 3, "seed": 0}


def importance_auc(result, cohort_dir, modality="wsi"):
    """Mean over test patients of the ROC AUC of patch importance for the planted patches."""
    aucs = []
    for pid in result.folds["patient_id"]:
        imp = pd.read_csv(result.importance_path(pid, modality))["importance"].to_numpy()
        planted = load_planted_mask(cohort_dir, pid, modality)
        assert len(imp) == len(planted)
        if planted.any() and not planted.all():
            aucs.append(roc_auc_score(planted, imp))
    return float(np.mean(aucs))


# The cohort of both tests and of benchmarks/bench_importance.py: 90 patients, WSI signal,
# without the default confounder and decoy (the planted extent grows with the risk, so the
# bag mean carries part of the signal too).
COHORT = {
    "confounder": 0.0,
    "decoy": False,
    "extent_signal": True,
    "n_patients": 90,
    "dim": 16,
    "wsi_patches": (300, 600),
    "ct_patches": (16, 32),
    "signal": "wsi",
    "seed": 1,
}


@pytest.fixture(scope="module")
def wsi_cohort(tmp_path_factory):
    """``(cohort_dir, csv, graphs_dir)`` of :data:`COHORT` with its WSI graphs."""
    root = tmp_path_factory.mktemp("recovery")
    csv = make_synthetic_cohort(root / "cohort", **COHORT, progress=False)
    build_cohort_graphs(csv, root / "graphs", modalities=["wsi"], progress=False)
    return root / "cohort", csv, root / "graphs"


@pytest.mark.slow
def test_sparra_recovers_survival_and_planted_regions(wsi_cohort, tmp_path):
    cohort_dir, csv, graphs = wsi_cohort
    runs = {}
    for aggregator in ("sparra", "mean"):
        # Plain MIL over the graph's nodes (use_graph=False): with the graph encoder the
        # top-k selection, not SPARRA's weights, decides most of the importance map.
        runs[aggregator] = train_cross_validated(
            csv,
            graphs,
            aggregator=aggregator,
            modalities="wsi",
            out_dir=tmp_path / aggregator,
            config={**CONFIG, "use_graph": False},
            progress=False,
        )
    sparra, mean = runs["sparra"], runs["mean"]
    assert sparra.folds.equals(mean.folds)
    c_sparra, c_mean = sparra.mean_c_index, mean.mean_c_index
    auc_sparra, auc_mean = importance_auc(sparra, cohort_dir), importance_auc(mean, cohort_dir)
    print(
        f"C-index sparra {c_sparra:.3f} mean {c_mean:.3f}; "
        f"importance AUC sparra {auc_sparra:.3f} mean {auc_mean:.3f}"
    )
    assert c_sparra > 0.65 and min(sparra.fold_c_index.values()) > 0.55
    assert c_mean > 0.6
    # training seeds 0-2 give 0.80-0.82 with the default recipe (median centring, sharpness
    # 1); the recipe with mean centring gave 0.36-0.86: some seeds fitted without selecting
    # the region
    assert auc_sparra >= 0.75
    assert auc_mean == pytest.approx(0.5)  # uniform weights rank nothing

    # Faithfulness: deleting the 10% of patches SPARRA ranks first moves the risk more than
    # deleting 10% at random, on average over the test patients of a fold.
    model, _, test, store = load_fold_model(sparra.out_dir, 0)
    table = deletion_check(model, test, store, fraction=0.1, n_random=3)
    assert len(table) == len(test)
    print(table[["delta_top", "delta_random"]].mean())
    assert table["delta_top"].mean() > 1.5 * table["delta_random"].mean()
    assert (table["delta_top"] > table["delta_random"]).mean() > 0.6


@pytest.mark.slow
def test_sparra_graph_encoder_importance_finds_planted_regions(wsi_cohort, tmp_path):
    """Through the graph encoder (GCN, top-k 0.2 twice), with the ``interpretable`` preset:
    Gumbel exploration and a faster learning rate let the top-k selection learn where the
    signal is, and weights traced back through the convolutions cover the kept nodes'
    neighbourhoods. (The paper's selection-only maps keep ~4% of the nodes, which caps
    their AUC near 0.77 on this cohort: benchmarks/bench_importance.py.)"""
    cohort_dir, csv, graphs = wsi_cohort
    result = train_cross_validated(
        csv,
        graphs,
        aggregator="sparra",
        modalities="wsi",
        out_dir=tmp_path / "sparra",
        config={**CONFIG, "preset": "interpretable"},
        progress=False,
    )
    auc = importance_auc(result, cohort_dir)
    print(f"graph encoder: C-index {result.mean_c_index:.3f}, importance AUC {auc:.3f}")
    # Measured (benchmarks/bench_importance.py, seeds 0-2): C 0.67-0.81, AUC 0.67-0.85
    # (this seed, now: C 0.74-0.75, AUC 0.69-0.71 -- float rounding alone, e.g. the order of
    # the sparse product's sums in the backward pass, moves it that much); the paper's
    # settings with selection-only maps: C 0.54-0.70, AUC 0.50-0.56. The bounds sit below the
    # measured range, above the paper's.
    assert result.mean_c_index > 0.68
    assert auc >= 0.65


# A small confounded cohort (the generator's defaults: a per-bag offset along the signal
# direction on every patch and a decoy region), WSI signal only, so that averaging fails.
CONFOUNDED = {
    "n_patients": 100,
    "dim": 16,
    "wsi_patches": (300, 600),
    "ct_patches": (16, 32),
    "signal": "wsi",
    "seed": 2,
}


@pytest.mark.slow
def test_default_recipe_sparra_beats_mean_pooling_on_a_confounded_cohort(tmp_path):
    """The default training recipe (the ``learned`` preset: GCN + top-k, 400 steps) finds
    what the bag mean cannot: its SPARRA C-index is well above the ridge Cox on the bag
    mean, and its maps rank the planted patches above the rest."""
    csv = make_synthetic_cohort(tmp_path / "cohort", **CONFOUNDED, progress=False)
    build_cohort_graphs(csv, tmp_path / "graphs", modalities=["wsi"], progress=False)
    ceilings = pd.read_json(tmp_path / "cohort" / "ceilings.json", typ="series")
    assert ceilings["oracle_region_mean"] > ceilings["mean_pooling"] + 0.08
    result = train_cross_validated(
        csv,
        tmp_path / "graphs",
        aggregator="sparra",
        modalities="wsi",
        out_dir=tmp_path / "run",
        config={"folds": 3, "seed": 0},
        progress=False,
    )
    assert result.config.preset == "learned" and result.config.steps == 400
    assert result.mean_c_index > ceilings["mean_pooling"] + 0.05
    assert importance_auc(result, tmp_path / "cohort") > 0.6
