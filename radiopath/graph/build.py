"""Build one spatial graph from one patch-embedding bag."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.utils import scatter, to_undirected

from radiopath.errors import RadiopathInputError
from radiopath.graph.clustering import hybrid_clustering, single_thread
from radiopath.graph.config import GraphConfig, load_preset, merge_overrides
from radiopath.graph.neighbours import delaunay_edges, estimate_pitch, knn_edges, radius_edges
from radiopath.io import EmbeddingBag, validate_bag

log = logging.getLogger(__name__)


class SpatialGraph(Data):
    """A PyG :class:`~torch_geometric.data.Data` that batches ``assignment`` correctly.

    ``assignment[p]`` is the node of patch ``p``; when graphs are batched, it is offset by
    the number of nodes before it (like ``edge_index``), so it keeps pointing at the right
    node of the batch.
    """

    def __inc__(self, key, value, *args, **kwargs):
        if key == "assignment":
            return self.num_nodes
        return super().__inc__(key, value, *args, **kwargs)


def _check_bag(bag: EmbeddingBag) -> None:
    if not isinstance(bag, EmbeddingBag):
        raise RadiopathInputError(
            f"expected an EmbeddingBag (see radiopath.io.read_embeddings), got {type(bag).__name__}"
        )
    # The bag may have been modified after it was made: check it again.
    validate_bag(bag)
    if bag.num_patches == 0:
        raise RadiopathInputError(
            "the bag has no patches; a graph needs at least one", path=bag.path, field="features"
        )
    if bag.dim == 0:
        raise RadiopathInputError("embeddings have width 0", path=bag.path, field="features")


def _patch_side(bag: EmbeddingBag) -> float:
    """The patch side in physical units: the pitch used when no two patches are apart."""
    if not bag.patch_size:
        return 1.0
    if bag.modality == "wsi" and bag.mpp:
        return float(bag.patch_size * bag.mpp)
    if bag.modality == "ct" and bag.spacing is not None:
        return float(bag.patch_size * min(bag.spacing))
    return float(bag.patch_size)


def _edges(pos: np.ndarray, cfg: GraphConfig, unit: float) -> np.ndarray:
    if cfg.edge_rule == "delaunay":
        edges = delaunay_edges(pos)
    elif cfg.edge_rule == "knn":
        edges = knn_edges(pos, cfg.k)
    else:
        edges = radius_edges(pos, cfg.radius * unit * (1 + 1e-9), cfg.max_neighbours)
    if cfg.max_edge_length is not None and edges.shape[1]:
        length = np.linalg.norm(pos[edges[0]] - pos[edges[1]], axis=1)
        edges = edges[:, length <= cfg.max_edge_length * unit * (1 + 1e-9)]
    return edges


def _coords_tensor(coords: np.ndarray) -> torch.Tensor:
    coords = np.ascontiguousarray(coords)
    if coords.dtype.kind == "u" or coords.dtype.kind == "b":
        coords = coords.astype(np.int64)
    return torch.from_numpy(coords.copy())


def build_graph(
    bag: EmbeddingBag,
    preset: str | Path | Mapping | GraphConfig | None = None,
    **overrides,
) -> Data:
    """Turn a bag of patch embeddings into a spatial graph.

    Parameters
    ----------
    bag
        The patch embeddings of one slide or scan.
    preset
        A preset name (``"wsi-clustered"``, ``"wsi-patch-knn"``, ``"ct-clustered-3d"``,
        ``"ct-patch-knn"``), a path to a YAML file, a mapping of options, a built
        :class:`~radiopath.graph.config.GraphConfig`, or None for the modality's default
        (see :mod:`radiopath.graph`; every key in ``docs/config-graph.md``).
    **overrides
        Options replacing the preset's (e.g. ``threshold=0.7``, ``edge_rule="knn"``; None:
        the preset's).

    Returns
    -------
    torch_geometric.data.Data
        A :class:`SpatialGraph` with ``x`` float32 ``[n_nodes, D]`` (mean embedding of each
        node's patches), ``pos`` float32 ``[n_nodes, d]`` (centroid in ``units``),
        ``edge_index`` long ``[2, E]`` (symmetric, coalesced, no self-loops unless
        ``self_loops``), ``assignment`` long ``[n_patches]`` (node of each patch, file
        order), ``patch_count`` long ``[n_nodes]``, ``patch_coords`` ``[n_patches, d]`` (the
        file's coordinates, unchanged), and ``modality``, ``units``, ``source`` and
        ``build_config`` (the options used plus ``resolved`` scales and ``config_hash``).

    Raises
    ------
    RadiopathInputError
        For a bag without patches, NaN/inf embeddings or coordinates, coordinates of the
        wrong width, or an invalid preset; the message names the file and field.

    Notes
    -----
    Degenerate bags give documented degenerate graphs: one patch -> one node and no edges;
    collinear or coplanar positions -> the Delaunay triangulation of the line or plane they
    span; duplicated positions -> each duplicate joined to the first patch at that position
    (a warning is logged).
    """
    _check_bag(bag)
    with single_thread():
        return _build(bag, preset, overrides)


def _build(bag: EmbeddingBag, preset, overrides: Mapping) -> SpatialGraph:
    try:
        cfg = merge_overrides(load_preset(preset, bag.modality), overrides)
    except RadiopathInputError as exc:
        raise RadiopathInputError(exc.reason, path=exc.path or bag.path, field=exc.field) from exc
    features = np.ascontiguousarray(bag.features, dtype=np.float32)
    pos = bag.physical_coords
    n, dim = pos.shape
    n_unique = len(np.unique(pos, axis=0))
    if n_unique < n:
        log.warning(
            "%s: %d of %d patches share their position with another patch",
            bag.path or "bag",
            n - n_unique,
            n,
        )
    pitch = estimate_pitch(pos, fallback=_patch_side(bag))
    unit = pitch if cfg.length_unit == "pitch" else 1.0
    resolved: dict[str, object] = {"pitch": pitch, "length_scale": unit}
    if cfg.method == "clustered" and n > 1:
        result = hybrid_clustering(
            pos,
            features,
            spatial_scale=unit,
            lambda_d=cfg.lambda_d,
            lambda_f=cfg.lambda_f,
            feature_scale=cfg.feature_scale,
            threshold=cfg.threshold,
            radius=cfg.neighbourhood_radius,
            max_neighbours=cfg.max_neighbours,
            seed=cfg.seed,
        )
        labels = result.labels
        resolved.update(
            feature_scale=result.feature_scale, n_pairs=result.n_pairs, rounds=result.rounds
        )
    else:
        labels = np.arange(n, dtype=np.int64)
    n_nodes = int(labels.max()) + 1
    assignment = torch.from_numpy(labels)
    x = scatter(torch.from_numpy(features), assignment, dim=0, dim_size=n_nodes, reduce="mean")
    node_pos = scatter(torch.from_numpy(pos), assignment, dim=0, dim_size=n_nodes, reduce="mean")
    counts = torch.bincount(assignment, minlength=n_nodes)
    edges = torch.from_numpy(_edges(node_pos.numpy(), cfg, unit))
    edge_index = to_undirected(edges, num_nodes=n_nodes)
    if cfg.self_loops:
        loops = torch.arange(n_nodes).repeat(2, 1)
        edge_index = to_undirected(torch.cat([edge_index, loops], dim=1), num_nodes=n_nodes)
    build_config = {**cfg.to_dict(), "config_hash": cfg.fingerprint(), "resolved": resolved}
    return SpatialGraph(
        x=x.float(),
        pos=node_pos.float(),
        edge_index=edge_index.long(),
        assignment=assignment,
        patch_count=counts.long(),
        patch_coords=_coords_tensor(bag.coords),
        modality=bag.modality,
        units=bag.units,
        source="" if bag.path is None else str(bag.path),
        build_config=build_config,
    )
