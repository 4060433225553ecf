"""The sparse hybrid clustering against brute-force average linkage."""

from __future__ import annotations

import numpy as np
import pytest
from graph_helpers import same_partition
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from radiopath.graph.clustering import hybrid_clustering, sparse_average_linkage


def _full_matrix_clusters(pos, feats, lambda_d, lambda_f, threshold, cutoff=np.inf):
    """SlideGraph's clustering, computed densely: every pair, scipy average linkage."""
    spatial = pdist(pos)
    d = 1 - np.exp(-lambda_f * pdist(feats)) * np.exp(-lambda_d * spatial)
    d[spatial > cutoff] = 1.0
    return fcluster(linkage(d, method="average"), threshold, criterion="distance")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_pairs_equals_dense_average_linkage(seed):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 3000, size=(150, 2))
    feats = rng.normal(size=(150, 8)) * 40
    ours = hybrid_clustering(
        pos,
        feats.astype(np.float32),
        spatial_scale=1.0,
        lambda_d=3e-3,
        lambda_f=1e-3,
        feature_scale=1.0,
        threshold=0.8,
        radius=1e9,
        max_neighbours=149,
    )
    ref = _full_matrix_clusters(pos, feats, 3e-3, 1e-3, 0.8)
    assert ours.labels.max() + 1 == len(np.unique(ref)) > 5
    assert same_partition(ours.labels, ref)


def test_truncated_neighbourhood_equals_dense_with_cutoff():
    """Pairs beyond the radius count as fully dissimilar, exactly as in SlideGraph."""
    rng = np.random.default_rng(5)
    pos = rng.uniform(0, 10, size=(200, 3))
    feats = rng.normal(size=(200, 4))
    ours = hybrid_clustering(
        pos,
        feats.astype(np.float32),
        spatial_scale=1.0,
        lambda_d=0.3,
        lambda_f=0.2,
        feature_scale=1.0,
        threshold=0.75,
        radius=2.5,
        max_neighbours=199,
    )
    ref = _full_matrix_clusters(pos, feats, 0.3, 0.2, 0.75, cutoff=2.5)
    assert same_partition(ours.labels, ref)


def test_linkage_on_explicit_sparse_graph():
    # Three points in a chain: d(0,1)=0.1, d(1,2)=0.2, (0,2) absent -> 1.
    # Average linkage merges {0,1} at 0.1, then D({0,1},2) = (1 + 0.2) / 2 = 0.6.
    i, j, d = np.array([0, 1]), np.array([1, 2]), np.array([0.1, 0.2])
    labels, _ = sparse_average_linkage(3, i, j, d, 0.59, np.arange(3.0))
    assert labels.tolist() == [0, 0, 1]
    labels, _ = sparse_average_linkage(3, i, j, d, 0.61, np.arange(3.0))
    assert labels.tolist() == [0, 0, 0]


def test_clusters_follow_feature_boundaries():
    """Feature similarity matters: no cluster straddles a boundary between tissue types."""
    side = 20
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(
        -1, 2
    )
    rng = np.random.default_rng(0)
    tissue = (cells[:, 0] >= side // 2).astype(int)
    feats = (rng.normal(size=(len(cells), 16)) + 6.0 * tissue[:, None]).astype(np.float32)
    aware = hybrid_clustering(cells.astype(float), feats, spatial_scale=1.0, lambda_f=1.0)
    blind = hybrid_clustering(
        cells.astype(float), feats, spatial_scale=1.0, lambda_f=0.0, threshold=0.8
    )

    def mixed(labels):
        return sum(len(np.unique(tissue[labels == c])) > 1 for c in np.unique(labels))

    assert mixed(aware.labels) == 0
    assert mixed(blind.labels) > 0


def test_labels_are_numbered_by_first_patch():
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 20, size=(300, 2))
    res = hybrid_clustering(pos, rng.normal(size=(300, 3)).astype(np.float32), spatial_scale=1.0)
    _, first = np.unique(res.labels, return_index=True)
    assert np.all(np.diff(first) > 0)
    assert res.labels[0] == 0
