"""Structure of the spatial graphs, with networkx: what a preset made of each slide or scan.

A graph preset decides how many nodes a bag becomes, how they are linked and whether the
tissue falls apart into islands; the aggregators only see that structure. These statistics
let a user compare presets and spot a broken graph (a bag shattered into hundreds of
components, a node with no neighbour) before training on it.

    >>> from radiopath.graph.statistics import cohort_graph_statistics
    >>> table = cohort_graph_statistics("graphs")          # one row per graph file
    >>> table.groupby("modality")[["n_nodes", "n_components", "clustering"]].median()

``radiopath graphs --stats`` writes the same table to ``<out>/statistics.csv``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import networkx as nx
import numpy as np
import pandas as pd
from torch_geometric.data import Data
from torch_geometric.utils import to_networkx

STATISTICS = (
    "n_nodes",
    "n_edges",
    "mean_degree",
    "isolated_nodes",
    "n_components",
    "largest_component",
    "clustering",
    "patches_per_node",
)


def graph_to_networkx(graph: Data) -> nx.Graph:
    """The graph as an undirected :class:`networkx.Graph` (one edge per node pair), with the
    node attributes ``pos`` (node centre) and ``patch_count`` where the graph has them, e.g.
    for :func:`networkx.write_graphml` or networkx's algorithms."""
    attrs = [a for a in ("pos", "patch_count") if getattr(graph, a, None) is not None]
    data = Data(edge_index=graph.edge_index, num_nodes=int(graph.num_nodes))
    for a in attrs:
        data[a] = getattr(graph, a)
    return to_networkx(data, node_attrs=attrs, to_undirected=True, remove_self_loops=True)


def graph_statistics(graph: Data) -> dict[str, float]:
    """Size, degree, connectivity and clustering of one graph.

    Returns
    -------
    dict
        ``n_nodes``, ``n_edges`` (undirected, self-loops left out), ``mean_degree``,
        ``isolated_nodes`` (nodes without a neighbour), ``n_components`` (connected
        components), ``largest_component`` (fraction of the nodes in the largest one),
        ``clustering`` (average clustering coefficient, :func:`networkx.average_clustering`)
        and ``patches_per_node`` (mean; NaN without ``patch_count``).
    """
    g = graph_to_networkx(graph)
    n = g.number_of_nodes()
    counts = getattr(graph, "patch_count", None)
    components = [len(c) for c in nx.connected_components(g)] if n else []
    return {
        "n_nodes": n,
        "n_edges": g.number_of_edges(),
        "mean_degree": 2.0 * g.number_of_edges() / n if n else float("nan"),
        "isolated_nodes": nx.number_of_isolates(g),
        "n_components": len(components),
        "largest_component": max(components) / n if n else float("nan"),
        "clustering": nx.average_clustering(g) if n else float("nan"),
        "patches_per_node": float(np.mean(counts.numpy())) if counts is not None else float("nan"),
    }


def cohort_graph_statistics(
    graphs_dir: str | os.PathLike, progress: Callable | None = None
) -> pd.DataFrame:
    """:func:`graph_statistics` of every graph file of a folder written by
    :func:`~radiopath.graph.build_cohort_graphs`: the manifest's ``patient_id``,
    ``modality`` and ``graph`` columns, then one column per statistic."""
    from radiopath.graph.cohort import load_graph_manifest
    from radiopath.graph.storage import load_graph

    manifest = load_graph_manifest(graphs_dir)
    rows = []
    items = manifest.itertuples(index=False)
    for row in progress(items, total=len(manifest)) if progress else items:
        graph = load_graph(row.path)
        rows.append(
            {"patient_id": row.patient_id, "modality": row.modality, "graph": row.graph}
            | graph_statistics(graph)
        )
    return pd.DataFrame(rows, columns=["patient_id", "modality", "graph", *STATISTICS])
