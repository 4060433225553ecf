"""Sparse spatial neighbour structures in any dimension (KD-trees and Delaunay).

Everything here is O(N log N) in the number of points: KD-tree queries with a bounded
number of neighbours, and Qhull's Delaunay triangulation. Degenerate point sets (fewer
points than a simplex needs, collinear or coplanar points, duplicates) are handled before
they reach Qhull, so no ``QhullError`` escapes.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import Delaunay, QhullError, cKDTree

log = logging.getLogger(__name__)

# Relative tolerance on singular values when deciding the affine rank of a point set.
_RANK_TOL = 1e-9


def estimate_pitch(pos: np.ndarray, fallback: float = 1.0) -> float:
    """The patch pitch: the median distance from a patch to its nearest distinct patch.

    Parameters
    ----------
    pos
        ``[N, d]`` patch positions.
    fallback
        Returned when no two patches are at distinct positions (0 or 1 patch, or all
        duplicates).
    """
    if len(pos) < 2:
        return float(fallback)
    k = min(len(pos), 4)
    dist, _ = cKDTree(pos).query(pos, k=k)
    dist = dist[:, 1:]
    # The nearest distinct neighbour: skip zero distances (duplicates).
    positive = np.where(dist > 0, dist, np.inf).min(axis=1)
    positive = positive[np.isfinite(positive)]
    if len(positive) == 0:
        return float(fallback)
    return float(np.median(positive))


def neighbour_pairs(
    pos: np.ndarray, radius: float, max_neighbours: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique unordered pairs ``(i < j)`` within ``radius``, at most ``max_neighbours`` per point.

    A pair is kept when either point has the other among its ``max_neighbours`` nearest
    within ``radius``; the cap bounds the work at O(N * max_neighbours) even for dense or
    duplicated positions.

    Returns
    -------
    i, j : ndarray of int64
        ``[P]`` pair endpoints with ``i < j`` (grouped by ``i`` for the pairs found from
        ``i``'s side).
    dist : ndarray of float64
        ``[P]`` Euclidean distances.
    """
    n = len(pos)
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    if n < 2:
        return empty
    k = min(n, int(max_neighbours) + 1)
    dist, idx = cKDTree(pos).query(pos, k=k, distance_upper_bound=radius, workers=-1)
    dist = dist.reshape(n, k)
    idx = idx.reshape(n, k).astype(np.int64)
    rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], (n, k))
    valid = idx < n
    # Each pair is listed from its lower end; a pair found only from its upper end (the
    # lower end's list was full before reaching it) is added separately.
    forward = valid & (idx > rows)
    i, j, d = rows[forward], idx[forward], dist[forward]
    full = valid[:, -1]
    kth = np.where(full, dist[:, -1], np.inf)
    backward = valid & (idx < rows)
    bi, bj, bd = rows[backward], idx[backward], dist[backward]
    missing = bd >= kth[bj]
    if missing.any():
        bi, bj, bd = bi[missing], bj[missing], bd[missing]
        # At a tie with the k-th distance the pair may already be in the lower end's list.
        listed = (idx[bj] == bi[:, None]).any(axis=1)
        i = np.concatenate([i, bj[~listed]])
        j = np.concatenate([j, bi[~listed]])
        d = np.concatenate([d, bd[~listed]])
    return i, j, d


def knn_edges(pos: np.ndarray, k: int) -> np.ndarray:
    """Symmetrised k-nearest-neighbour edges ``[2, E]`` (i < j, each pair once)."""
    i, j, _ = neighbour_pairs(pos, np.inf, k)
    return np.stack([i, j])


def radius_edges(pos: np.ndarray, radius: float, max_neighbours: int) -> np.ndarray:
    """Edges ``[2, E]`` between points closer than ``radius`` (at most ``max_neighbours`` each)."""
    i, j, _ = neighbour_pairs(pos, radius, max_neighbours)
    return np.stack([i, j])


def affine_rank(pos: np.ndarray) -> tuple[int, np.ndarray]:
    """Affine rank of a point set and the orthonormal basis of its span (rows)."""
    if len(pos) < 2:
        return 0, np.empty((0, pos.shape[1]))
    centred = pos - pos.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    if s[0] == 0:
        return 0, np.empty((0, pos.shape[1]))
    rank = int((s > _RANK_TOL * s[0]).sum())
    return rank, vt[:rank]


def _simplex_edges(simplices: np.ndarray) -> np.ndarray:
    """Unique unordered edges ``[2, E]`` of a set of simplices ``[S, d + 1]``."""
    m = simplices.shape[1]
    a, b = np.triu_indices(m, k=1)
    i = simplices[:, a].ravel().astype(np.int64)
    j = simplices[:, b].ravel().astype(np.int64)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    n = int(simplices.max()) + 1 if simplices.size else 0
    key = np.unique(lo * max(n, 1) + hi)
    return np.stack([key // max(n, 1), key % max(n, 1)])


def _triangulation_edges(points: np.ndarray) -> np.ndarray:
    """Delaunay edges of full-rank, duplicate-free points, with Qhull's failures handled."""
    try:
        tri = Delaunay(points)
    except QhullError:
        # Nearly degenerate beyond the rank test: joggle the input (Qhull's own remedy).
        log.debug("Delaunay failed on %d points; retrying with joggled input", len(points))
        try:
            tri = Delaunay(points, qhull_options="QJ")
        except QhullError as exc:
            k = 2 * points.shape[1]
            log.warning(
                "Delaunay triangulation failed (%s); using %d-nearest-neighbour edges",
                str(exc).splitlines()[0],
                k,
            )
            return knn_edges(points, k)
    edges = _simplex_edges(tri.simplices)
    if len(tri.coplanar):
        # Points Qhull left out of every simplex (numerically on a facet): join each to its
        # nearest vertex so that it is not isolated.
        extra = tri.coplanar[:, [2, 0]].T.astype(np.int64)
        edges = np.concatenate([edges, extra], axis=1)
    return edges


def delaunay_edges(pos: np.ndarray) -> np.ndarray:
    """Edges ``[2, E]`` (i < j) of the Delaunay triangulation of ``pos``, in any dimension.

    Degenerate inputs get the triangulation of the subspace they span: collinear points
    are joined in order along their line, coplanar points in 3-D are triangulated in their
    plane, and duplicated positions are each joined to the first point at that position
    (they share its other edges only through it).

    Parameters
    ----------
    pos
        ``[N, d]`` positions.
    """
    n, dim = pos.shape
    if n < 2:
        return np.empty((2, 0), np.int64)
    uniq, first, inverse = np.unique(pos, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    rank, basis = affine_rank(uniq)
    if rank == 0:
        edges_u = np.empty((2, 0), np.int64)
    elif rank == 1:
        order = np.argsort((uniq - uniq.mean(axis=0)) @ basis[0], kind="stable")
        edges_u = np.stack([order[:-1], order[1:]]).astype(np.int64)
    else:
        proj = uniq if rank == dim else (uniq - uniq.mean(axis=0)) @ basis.T
        edges_u = _triangulation_edges(proj)
    # Map unique positions back to the representative point of each position.
    edges = first[edges_u] if edges_u.size else np.empty((2, 0), np.int64)
    dup = np.nonzero(first[inverse] != np.arange(n))[0]
    if len(dup):
        dup_edges = np.stack([first[inverse[dup]], dup])
        edges = np.concatenate([edges, dup_edges], axis=1)
    lo, hi = np.minimum(edges[0], edges[1]), np.maximum(edges[0], edges[1])
    return np.stack([lo, hi]).astype(np.int64)
