"""Graph statistics (networkx) on graphs whose answers are known by hand."""

from __future__ import annotations

import networkx as nx
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch_geometric.data import Data
from torch_geometric.utils import to_undirected

from radiopath.cli import main
from radiopath.graph.statistics import graph_statistics, graph_to_networkx


def triangle_path_and_isolated() -> Data:
    """Nodes 0-1-2 a triangle, 3-4-5 a path, 6 alone; patches 1..7 per node."""
    edges = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 0, 4, 5]])
    return Data(
        x=torch.zeros(7, 2),
        edge_index=to_undirected(edges, num_nodes=7),
        num_nodes=7,
        patch_count=torch.arange(1, 8),
        pos=torch.arange(14, dtype=torch.float32).view(7, 2),
    )


def test_statistics_of_a_graph_counted_by_hand():
    stats = graph_statistics(triangle_path_and_isolated())
    assert stats["n_nodes"] == 7 and stats["n_edges"] == 5
    assert stats["n_components"] == 3 and stats["isolated_nodes"] == 1
    assert stats["largest_component"] == pytest.approx(3 / 7)
    assert stats["mean_degree"] == pytest.approx(10 / 7)
    # the triangle's three nodes have clustering 1, every other node 0
    assert stats["clustering"] == pytest.approx(3 / 7)
    assert stats["patches_per_node"] == pytest.approx(4.0)


def test_networkx_export_keeps_edges_once_and_node_attributes():
    g = graph_to_networkx(triangle_path_and_isolated())
    assert isinstance(g, nx.Graph) and not g.is_directed()
    assert sorted(map(sorted, g.edges())) == [[0, 1], [0, 2], [1, 2], [3, 4], [4, 5]]
    assert g.nodes[6]["patch_count"] == 7 and g.nodes[1]["pos"] == [2.0, 3.0]


def test_graphs_command_writes_statistics_beside_the_manifest(small_cohort, tmp_path):
    out = tmp_path / "graphs"
    result = CliRunner().invoke(
        main,
        ["graphs", "--cohort", str(small_cohort), "--out", str(out), "--stats", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "statistics.csv")
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(table) == len(manifest)
    merged = table.merge(manifest, on=["patient_id", "modality", "graph"])
    assert (merged["n_nodes_x"] == merged["n_nodes_y"]).all()
    assert (table["n_components"] >= 1).all() and "connected component" in result.output
