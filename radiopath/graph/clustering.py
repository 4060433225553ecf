r"""Hybrid spatial + feature clustering of patches (the SlideGraph recipe, made sparse).

SlideGraph (Lu et al., "SlideGraph+: whole slide image level graphs to predict HER2 status
in breast cancer", Medical Image Analysis 2022; the constructor in TIAToolbox that SPARRA's
reference code calls) groups patches by average-linkage agglomerative clustering under the
dissimilarity

.. math::

    d(i, j) = 1 - \exp\!\left(-\lambda_f \frac{\lVert f_i - f_j \rVert}{s_f}\right)
                  \exp\!\left(-\lambda_d \frac{\lVert p_i - p_j \rVert}{s_p}\right),

with :math:`d = 1` for pairs farther apart than a search radius, and cuts the dendrogram at
:math:`\lambda_h` (``threshold``). It fills the full :math:`N \times N` condensed matrix,
which costs :math:`O(N^2)` memory and time.

Here the same dissimilarity is evaluated only on a sparse neighbourhood graph (each patch's
at most ``max_neighbours`` neighbours within ``radius``; every other pair keeps
:math:`d = 1`, as in SlideGraph beyond its radius), and average linkage is run on that graph
by rounds of *mutual nearest-neighbour merges*. Average linkage is reducible
(:math:`d(A \cup B, C) \ge \min(d(A, C), d(B, C))`), so merging all reciprocal nearest
neighbours at once gives exactly the clusters of the sequential algorithm cut at the same
height (Murtagh, "A survey of recent advances in hierarchical clustering algorithms",
The Computer Journal 1983). Between clusters :math:`A` and :math:`B` the linkage is

.. math::

    D(A, B) = \frac{S_{AB} + (|A||B| - C_{AB})}{|A||B|},

where :math:`S_{AB}` sums :math:`d` over the :math:`C_{AB}` neighbour pairs between them and
every other pair counts 1. Each round is a few sorts over the current cluster graph, so the
whole clustering is :math:`O(R \, E \log E)` for :math:`E = O(N \cdot` ``max_neighbours``)
pairs and :math:`R` rounds (typically 10-20).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from radiopath.graph.neighbours import neighbour_pairs
from radiopath.runtime import intra_op_threads

log = logging.getLogger(__name__)

# Rows gathered per block when computing feature distances: small enough to stay in cache.
_FEATURE_BLOCK = 2048


def single_thread():
    """Run torch on one thread inside the block (restored after;
    :func:`radiopath.runtime.intra_op_threads`).

    The graph kernels are memory-bound gathers and small sorts, which more threads barely
    speed up, while on cores shared with other processes torch's thread pool slows them down.
    """
    return intra_op_threads(1)


def pair_feature_distances(features: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Euclidean distances ``|f_i - f_j|`` for the given pairs, in blocks (no N x N matrix).

    Gathering rows dominates the cost, so it is done with ``index_select`` (a contiguous
    row gather) on one thread, for the reason given in :func:`single_thread`.
    """
    table = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    left, right = torch.from_numpy(i), torch.from_numpy(j)
    out = torch.empty(len(i), dtype=torch.float32)
    with single_thread():
        for start in range(0, len(i), _FEATURE_BLOCK):
            stop = start + _FEATURE_BLOCK
            diff = table.index_select(0, left[start:stop])
            diff -= table.index_select(0, right[start:stop])
            out[start:stop] = torch.linalg.vector_norm(diff, dim=1)
    return out.numpy().astype(np.float64)


def hybrid_dissimilarity(
    spatial: np.ndarray, feature: np.ndarray, lambda_d: float, lambda_f: float
) -> np.ndarray:
    r""":math:`1 - e^{-\lambda_f f} e^{-\lambda_d s}` for scaled distances ``s`` and ``f``."""
    return -np.expm1(-(lambda_f * feature + lambda_d * spatial))


def sparse_average_linkage(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    dissimilarity: np.ndarray,
    threshold: float,
    priority: np.ndarray,
) -> tuple[np.ndarray, int]:
    """Average-linkage clusters of ``n`` points cut at ``threshold``, on a sparse graph.

    Pairs not listed have dissimilarity 1. Clusters merge while their average linkage is
    at most ``threshold`` (the ``criterion="distance"`` cut of
    :func:`scipy.cluster.hierarchy.fcluster`).

    Parameters
    ----------
    n
        Number of points.
    i, j
        ``[P]`` unique pairs with ``i < j``.
    dissimilarity
        ``[P]`` values in ``[0, 1]``.
    threshold
        The cut height.
    priority
        ``[n]`` distinct values breaking ties between equally near neighbours (the
        neighbour with the lowest priority wins); a cluster inherits its members' minimum.

    Returns
    -------
    labels : ndarray of int64
        ``[n]`` cluster of each point, numbered by first appearance.
    rounds : int
        Number of merge rounds.
    """
    labels = np.arange(n, dtype=np.int64)
    size = np.ones(n, dtype=np.float64)
    a, b = i.astype(np.int64), j.astype(np.int64)
    total = dissimilarity.astype(np.float64).copy()
    count = np.ones(len(a), dtype=np.float64)
    prio = priority.astype(np.float64).copy()
    n_clusters = n
    rounds = 0
    while len(a):
        pairs = size[a] * size[b]
        linkage = (total + pairs - count) / pairs
        near = linkage <= threshold
        if not near.any():
            break
        rounds += 1
        nearest, mutual = _mutual_nearest(a[near], b[near], linkage[near], prio, n_clusters)
        # Merge each reciprocal pair into its lower-numbered member, then renumber.
        target = np.arange(n_clusters, dtype=np.int64)
        target[nearest[mutual]] = mutual
        keep = target == np.arange(n_clusters)
        new_id = np.cumsum(keep) - 1
        remap = new_id[target]
        n_new = int(keep.sum())
        size = np.bincount(remap, weights=size, minlength=n_new)
        new_prio = np.full(n_new, np.inf)
        np.minimum.at(new_prio, remap, prio)
        prio = new_prio
        labels = remap[labels]
        a, b, total, count = _contract_pairs(a, b, total, count, remap, n_new)
        n_clusters = n_new
    return _number_by_first_point(labels), rounds


def _mutual_nearest(ca, cb, cl, prio, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Each cluster's nearest neighbour among the pairs ``(ca, cb)`` at linkage ``cl``, and
    the reciprocal pairs.

    The nearest has the smallest linkage, then the lowest priority. Returns ``(nearest,
    mutual)``: ``[n_clusters]`` neighbour (-1 for none), and the lower member of each
    reciprocal pair.
    """
    src = np.concatenate([ca, cb])
    dst = np.concatenate([cb, ca])
    dd = np.concatenate([cl, cl])
    best = np.full(n_clusters, np.inf)
    np.minimum.at(best, src, dd)
    tied = dd == best[src]
    src, dst = src[tied], dst[tied]
    best_prio = np.full(n_clusters, np.inf)
    np.minimum.at(best_prio, src, prio[dst])
    chosen = prio[dst] == best_prio[src]
    nearest = np.full(n_clusters, -1, dtype=np.int64)
    nearest[src[chosen]] = dst[chosen]
    has = np.nonzero(nearest >= 0)[0]
    partner = nearest[has]
    mutual = has[(nearest[partner] == has) & (has < partner)]
    return nearest, mutual


def _contract_pairs(a, b, total, count, remap, n_new: int):
    """The cluster graph after a merge: pairs between distinct new clusters, their summed
    dissimilarity ``total`` and neighbour-pair ``count`` added up; ``(a, b, total, count)``."""
    ra, rb = remap[a], remap[b]
    external = ra != rb
    ra, rb = ra[external], rb[external]
    lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
    key, inverse = np.unique(lo * n_new + hi, return_inverse=True)
    total = np.bincount(inverse, weights=total[external], minlength=len(key))
    count = np.bincount(inverse, weights=count[external], minlength=len(key))
    return key // n_new, key % n_new, total, count


def _number_by_first_point(labels: np.ndarray) -> np.ndarray:
    """Clusters renumbered by their first point, so the labelling does not depend on merge order."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[inverse.ravel()].astype(np.int64)


@dataclass
class ClusteringResult:
    """Output of :func:`hybrid_clustering`.

    Attributes
    ----------
    labels
        ``[N]`` node of each patch, numbered by first patch.
    spatial_scale, feature_scale
        The resolved scales :math:`s_p` and :math:`s_f`.
    n_pairs
        Neighbour pairs the dissimilarity was evaluated on.
    rounds
        Merge rounds of the agglomeration.
    """

    labels: np.ndarray
    spatial_scale: float
    feature_scale: float
    n_pairs: int
    rounds: int


def hybrid_clustering(
    pos: np.ndarray,
    features: np.ndarray,
    *,
    spatial_scale: float,
    lambda_d: float = 0.672,
    lambda_f: float = 0.5,
    feature_scale: float | str = "median",
    threshold: float = 0.85,
    radius: float = 3.0,
    max_neighbours: int = 28,
    seed: int = 0,
) -> ClusteringResult:
    """Cluster patches by spatial proximity and feature similarity (sparse SlideGraph).

    Parameters
    ----------
    pos
        ``[N, d]`` patch positions (any dimension).
    features
        ``[N, D]`` patch embeddings.
    spatial_scale
        :math:`s_p`: the length unit of ``lambda_d`` and ``radius`` (the patch pitch, or 1
        for physical units).
    lambda_d, lambda_f
        Spatial and feature decay rates.
    feature_scale
        :math:`s_f`: a number, or ``"median"`` for the median feature distance between
        spatially adjacent patches (within 1.5 spatial units), which makes ``lambda_f``
        independent of the encoder's scale.
    threshold
        Average-linkage cut height (SlideGraph's ``lambda_h``).
    radius, max_neighbours
        The neighbourhood (in spatial units) on which the dissimilarity is evaluated.
    seed
        Seeds the tie-breaking priorities (ties are common on regular patch grids).
    """
    n = len(pos)
    i, j, spatial = neighbour_pairs(pos, radius * spatial_scale * (1 + 1e-9), max_neighbours)
    spatial = spatial / spatial_scale
    feature = pair_feature_distances(features, i, j)
    if feature_scale == "median":
        adjacent = feature[spatial <= 1.5]
        pool = adjacent if len(adjacent) else feature
        scale = float(np.median(pool)) if len(pool) else 1.0
        if not scale > 0:
            scale = 1.0
    else:
        scale = float(feature_scale)
    dissimilarity = hybrid_dissimilarity(spatial, feature / scale, lambda_d, lambda_f)
    priority = np.random.default_rng(seed).permutation(n).astype(np.float64)
    labels, rounds = sparse_average_linkage(n, i, j, dissimilarity, threshold, priority)
    log.debug(
        "clustered %d patches into %d nodes (%d pairs, %d rounds)",
        n,
        labels.max() + 1 if n else 0,
        len(i),
        rounds,
    )
    return ClusteringResult(labels, float(spatial_scale), scale, len(i), rounds)
