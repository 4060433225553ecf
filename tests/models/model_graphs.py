"""Random spatial graphs in the layout of ``radiopath.graph.build_graph`` for model tests."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch_geometric.data import Data
from torch_geometric.utils import remove_self_loops, to_undirected


def random_graph(
    n_nodes: int, dim: int, seed: int, ndim: int = 2, patches_per_node: int = 3
) -> Data:
    """A random spatial graph: kNN edges, ``assignment`` of ``patches_per_node`` patches per node."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 100, size=(n_nodes, ndim))
    _, idx = cKDTree(pos).query(pos, k=min(6, n_nodes))
    src = np.repeat(np.arange(n_nodes), idx.shape[1])
    edge_index, _ = remove_self_loops(torch.tensor(np.stack([src, idx.reshape(-1)])))
    edge_index = to_undirected(edge_index, num_nodes=n_nodes)
    assignment = rng.permutation(np.repeat(np.arange(n_nodes), patches_per_node))
    patch_coords = pos[assignment] + rng.uniform(-1, 1, size=(len(assignment), ndim))
    return Data(
        x=torch.tensor(rng.normal(size=(n_nodes, dim)), dtype=torch.float32),
        pos=torch.tensor(pos, dtype=torch.float32),
        edge_index=edge_index,
        assignment=torch.tensor(assignment),
        patch_count=torch.full((n_nodes,), patches_per_node),
        patch_coords=torch.tensor(patch_coords, dtype=torch.float32),
        modality="wsi" if ndim == 2 else "ct",
        source=f"graph{seed}.h5",
    )
