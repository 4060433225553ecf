"""Independent reference implementations (brute force) used by the graph tests."""

from __future__ import annotations

import itertools

import numpy as np

from radiopath.io import EmbeddingBag


def grid_bag(side=12, dim=6, modality="wsi", seed=0, spacing=(0.8, 0.8, 2.5), **kw):
    """A bag on a regular patch grid (2-D square or 3-D cube) with random features."""
    rng = np.random.default_rng(seed)
    nd = 2 if modality == "wsi" else 3
    cells = np.stack(np.meshgrid(*[np.arange(side)] * nd, indexing="ij"), -1).reshape(-1, nd)
    size = 256 if modality == "wsi" else 8
    extra = {"mpp": 0.5} if modality == "wsi" else {"spacing": spacing}
    extra.update(kw)
    return EmbeddingBag(
        features=rng.normal(size=(len(cells), dim)).astype(np.float32),
        coords=(cells * size).astype(np.int64),
        modality=modality,
        patch_size=size,
        **extra,
    )


def random_bag(n=40, dim=5, modality="wsi", seed=0, extent=5000, **kw):
    """A bag at random (general-position) coordinates."""
    rng = np.random.default_rng(seed)
    nd = 2 if modality == "wsi" else 3
    return EmbeddingBag(
        features=rng.normal(size=(n, dim)).astype(np.float32),
        coords=rng.uniform(0, extent, size=(n, nd)),
        modality=modality,
        **kw,
    )


def edge_set(edge_index) -> set[tuple[int, int]]:
    ei = np.asarray(edge_index)
    return {(int(min(a, b)), int(max(a, b))) for a, b in ei.T}


def brute_delaunay_edges(points: np.ndarray) -> set[tuple[int, int]]:
    """Edges of simplices whose circumsphere contains no other point (points in general position)."""
    n, d = points.shape
    edges = set()
    for simplex in itertools.combinations(range(n), d + 1):
        p = points[list(simplex)]
        a = 2 * (p[1:] - p[0])
        b = (p[1:] ** 2).sum(1) - (p[0] ** 2).sum()
        if abs(np.linalg.det(a)) < 1e-9:
            continue
        centre = np.linalg.solve(a, b)
        r2 = ((p[0] - centre) ** 2).sum()
        others = np.delete(np.arange(n), list(simplex))
        if (((points[others] - centre) ** 2).sum(1) < r2 * (1 - 1e-9)).any():
            continue
        edges.update((min(i, j), max(i, j)) for i, j in itertools.combinations(simplex, 2))
    return edges


def brute_knn_edges(points: np.ndarray, k: int) -> set[tuple[int, int]]:
    dist = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    edges = set()
    for i in range(len(points)):
        for j in np.argsort(dist[i], kind="stable")[:k]:
            edges.add((min(i, int(j)), max(i, int(j))))
    return edges


def same_partition(a, b) -> bool:
    """Whether two labelings group the items identically (up to renaming)."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
