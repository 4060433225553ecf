"""GraphEncoder's own GCN normalisation against PyG's ``GCNConv(normalize=True)``."""

from __future__ import annotations

import pytest
import torch
from model_graphs import random_graph
from torch_geometric.data import Batch
from torch_geometric.nn import GCNConv

from radiopath.models.encoders import (
    GraphEncoder,
    _gcn_forward,
    _sparse_adjacency,
    gcn_normalized_adjacency,
)


def batch_of(sizes, dim=5, seed=0):
    graphs = [random_graph(n, dim, seed + i) for i, n in enumerate(sizes)]
    return Batch.from_data_list(
        [type(g)(x=g.x, edge_index=g.edge_index, num_nodes=g.x.size(0)) for g in graphs]
    )


def pyg_reference(enc: GraphEncoder, x, edge_index, batch):
    """The encoder's forward pass with PyG doing the GCN normalisation (``conv(h, edge_index)``)."""
    node_map = torch.arange(x.size(0))
    h = enc.project(x)
    for layer, conv in enumerate(enc.convs):
        if isinstance(conv, GCNConv):
            h = torch.relu(conv(h, edge_index))  # gcn_norm with add_remaining_self_loops
        else:
            h = torch.relu(conv(h, _sparse_adjacency(edge_index, h.size(0), h.dtype)))
        if layer < len(enc.pools):
            h, edge_index, _, batch, perm, _ = enc.pools[layer](h, edge_index, batch=batch)
            node_map = node_map[perm]
    return h, node_map, edge_index, batch


@pytest.mark.parametrize("sizes", [[2], [7], [40, 2, 25, 60]])
def test_gcn_forward_equals_pyg_gcnconv(sizes):
    b = batch_of(sizes)
    torch.manual_seed(0)
    conv = GCNConv(5, 4)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(b.num_nodes, 5, requires_grad=True)
    # Shuffled edges: the normalisation must not depend on the rows being grouped.
    shuffled = b.edge_index[:, torch.randperm(b.edge_index.size(1))]
    ours = _gcn_forward(conv, x, shuffled)
    for adj in (b.edge_index, _sparse_adjacency(b.edge_index, b.num_nodes)):
        ref = conv(x, adj)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(conv(x, b.edge_index).square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def test_normalised_adjacency_matches_dense_formula():
    # A 4-node path plus an isolated node: D^-1/2 (A + I) D^-1/2 written out by hand.
    edge_index = torch.tensor([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])
    adj, self_weight = gcn_normalized_adjacency(edge_index, 5, torch.float64)
    a = torch.zeros(5, 5, dtype=torch.float64)
    a[edge_index[0], edge_index[1]] = 1.0
    a_hat = a + torch.eye(5, dtype=torch.float64)
    d = a_hat.sum(1).rsqrt()
    expected = d[:, None] * a_hat * d[None, :]
    got = adj.to_dense() + torch.diag(self_weight)
    torch.testing.assert_close(got, expected)
    assert self_weight[4] == 1.0  # isolated node: only its self-loop


@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_encoder_equals_pyg_normalised_forward_in_batches(conv):
    b = batch_of([50, 3, 80, 30], dim=6, seed=3)
    torch.manual_seed(1)
    enc = GraphEncoder(6, 8, ratio=0.5, conv=conv, dropout=0.0).double()
    x = b.x.double().requires_grad_(True)
    out = enc(x, b.edge_index, b.batch, b.num_graphs)
    h, node_map, edge_index, batch = pyg_reference(enc, x, b.edge_index, b.batch)
    # Both layers: the second runs on the pooled graph, so equal selections and features
    # after it mean its normalisation agreed too.
    assert torch.equal(out.node_map, node_map)
    assert torch.equal(out.batch, batch)
    assert torch.equal(out.edge_index, edge_index)
    assert edge_index.size(1) > 0
    torch.testing.assert_close(out.x, h, atol=1e-10, rtol=1e-10)
    (g_ours,) = torch.autograd.grad(out.x.sum(), x)
    (g_ref,) = torch.autograd.grad(h.sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-10, rtol=1e-10)
