"""GraphEncoder's own GCN normalisation against PyG's ``GCNConv(normalize=True)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_graphs import random_graph
from torch_geometric.data import Batch
from torch_geometric.nn import GCNConv

from radiopath.models.encoders import GraphEncoder
from radiopath.models.propagation import (
    GCNRootConv,
    gcn_forward,
    gcn_normalized_adjacency,
    propagation_matrix,
    sparse_adjacency,
    symmetric_spmm,
)


def batch_of(sizes, dim=5, seed=0):
    graphs = [random_graph(n, dim, seed + i) for i, n in enumerate(sizes)]
    return Batch.from_data_list(
        [type(g)(x=g.x, edge_index=g.edge_index, num_nodes=g.x.size(0)) for g in graphs]
    )


def assert_same_targets(a, b, atol=1e-5, rtol=1e-4):
    """The reconstruction targets of two encodings, matched by input node. Top-k breaks exact
    ties between equal hidden vectors either way (float rounding decides), so a tied node may
    be kept by one encoding and not the other: it must then be tied with one kept by the other
    only, and every node kept by both must have the same target."""
    ia = {int(n): i for i, n in enumerate(a.node_map)}
    ib = {int(n): i for i, n in enumerate(b.node_map)}
    common = sorted(set(ia) & set(ib))
    assert len(common) >= 0.8 * len(ia)
    torch.testing.assert_close(
        a.target[[ia[n] for n in common]], b.target[[ib[n] for n in common]], atol=atol, rtol=rtol
    )
    only_b = [ib[n] for n in set(ib) - set(ia)]
    for i in (ia[n] for n in set(ia) - set(ib)):
        assert any(torch.allclose(a.x[i], b.x[j], atol=1e-6) for j in only_b)


def pyg_reference(enc: GraphEncoder, x, edge_index, batch):
    """The encoder's forward pass with PyG doing the GCN normalisation (``conv(h, edge_index)``)."""
    node_map = torch.arange(x.size(0))
    h = enc.project(x)
    for layer, conv in enumerate(enc.convs):
        if isinstance(conv, GCNConv):
            h = torch.relu(conv(h, edge_index))  # gcn_norm with add_remaining_self_loops
        else:
            h = torch.relu(conv(h, sparse_adjacency(edge_index, h.size(0), h.dtype)))
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
    ours = gcn_forward(conv, x, shuffled)
    for adj in (b.edge_index, sparse_adjacency(b.edge_index, b.num_nodes)):
        ref = conv(x, adj)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(conv(x, b.edge_index).square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def test_gcn_root_forward_is_pyg_gcn_plus_the_node_s_own_row_times_its_weight():
    b = batch_of([7, 40, 25])
    torch.manual_seed(0)
    conv = GCNRootConv(5, 4)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(b.num_nodes, 5, requires_grad=True)
    expected = GCNConv.forward(conv, x, b.edge_index) + x @ conv.root.weight.T
    ours = gcn_forward(conv, x, b.edge_index)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(x, b.edge_index), expected, atol=1e-6, rtol=1e-6)
    # the root term is not a no-op: without it the layer is plain GCN
    assert not torch.allclose(ours, GCNConv.forward(conv, x, b.edge_index), atol=1e-3)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)
    before = conv.root.weight.detach().clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.root.weight)


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


@pytest.mark.parametrize("conv", ["gcn", "gcn_root", "gin"])
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


# --- importance traced through the convolutions, Gumbel exploration, folded scaling -------


def dense_propagation(edge_index, n):
    """Row-normalised D^-1/2 (A + I) D^-1/2 written out densely."""
    a = torch.zeros(n, n)
    a[edge_index[0], edge_index[1]] = 1.0
    a = a + torch.eye(n)
    d = a.sum(1).rsqrt()
    a_hat = d[:, None] * a * d[None, :]
    return a_hat / a_hat.sum(1, keepdim=True)


def as_dense(index_value, n):
    (row, col), value = index_value
    return torch.zeros(n, n).index_put_((row, col), value, accumulate=True)


@pytest.mark.parametrize("sizes", [[7], [40, 2, 25]])
def test_propagation_matrix_is_row_normalised_gcn_adjacency(sizes):
    b = batch_of(sizes)
    ours = as_dense(propagation_matrix(b.edge_index, b.num_nodes, "gcn"), b.num_nodes)
    torch.testing.assert_close(ours, dense_propagation(b.edge_index, b.num_nodes))
    # gcn_root's root term reads the node itself, which A_hat's self-loop already covers
    root = as_dense(propagation_matrix(b.edge_index, b.num_nodes, "gcn_root"), b.num_nodes)
    torch.testing.assert_close(root, ours)
    gin = as_dense(propagation_matrix(b.edge_index, b.num_nodes, "gin"), b.num_nodes)
    torch.testing.assert_close(gin.sum(1), torch.ones(b.num_nodes))
    closed = (dense_propagation(b.edge_index, b.num_nodes) > 0).float()
    torch.testing.assert_close(gin, closed / closed.sum(1, keepdim=True))


def test_receptive_field_importance_without_pooling_is_two_propagation_steps():
    # ratio 1: no pooling, so w_in = P^T P^T w with P the graph's propagation matrix.
    b = batch_of([30, 12])
    enc = GraphEncoder(5, 8, ratio=1.0, importance="receptive_field").eval()
    out = enc(b.x, b.edge_index, b.batch, 2)
    w = torch.rand(out.x.size(0))
    p = dense_propagation(b.edge_index, b.num_nodes)
    torch.testing.assert_close(
        out.input_node_weights(w, "receptive_field"), p.T @ (p.T @ w), atol=1e-6, rtol=1e-5
    )


def test_receptive_field_importance_conserves_weight_and_extends_selection():
    sizes = [60, 25, 80]
    b = batch_of(sizes, seed=3)
    torch.manual_seed(0)
    enc = GraphEncoder(5, 8, ratio=0.3, importance="receptive_field").eval()
    out = enc(b.x, b.edge_index, b.batch, len(sizes))
    assert [s[0] for s in out.trace] == ["conv", "pool", "conv", "pool"]
    w = torch.rand(out.x.size(0))
    w = w / torch.zeros(len(sizes)).index_add(0, out.batch, w)[out.batch]  # 1 per graph
    sel = out.input_node_weights(w, "selection")
    rec = out.input_node_weights(w, "receptive_field")
    torch.testing.assert_close(
        torch.zeros(3).index_add(0, b.batch, rec), torch.ones(3), atol=1e-5, rtol=0
    )
    assert (rec >= 0).all()
    assert bool(((sel > 0) <= (rec > 0)).all())  # every kept node keeps some weight
    assert (rec > 0).sum() > (sel > 0).sum()  # and its neighbours get some
    # weight never leaves a graph
    graph_of_support = b.batch[rec > 0].unique()
    assert set(graph_of_support.tolist()) <= set(range(3))
    # training mode records no trace: the cheap selection mapping is used
    assert enc.train()(b.x, b.edge_index, b.batch, 3).trace == []


def test_gumbel_score_noise_shifts_scores_but_not_the_gradient_of_p():
    b = batch_of([50, 30], seed=5)
    torch.manual_seed(1)
    enc = GraphEncoder(5, 6, ratio=0.4, score_noise=0.7).train()
    pool = enc.pools[0]
    h = torch.rand(b.num_nodes, 6)

    torch.manual_seed(7)
    attn = enc._perturbed_scores_input(pool, h)
    x1, _, _, _, perm1, score1 = pool(h, b.edge_index, batch=b.batch, attn=attn)
    (g1,) = torch.autograd.grad(x1.square().sum(), pool.select.weight)

    # Independently: score = sigmoid(h.p/|p| + tau g) with the same Gumbel draws.
    torch.manual_seed(7)
    u = torch.rand(b.num_nodes).clamp_(1e-10, 1.0)
    gumbel = -torch.log(-torch.log(u))
    p = pool.select.weight.view(-1)
    raw = torch.sigmoid(h @ p / p.norm() + 0.7 * gumbel)
    from torch_geometric.nn.pool.select.topk import topk

    perm2 = topk(raw.detach(), 0.4, b.batch)
    assert torch.equal(perm1, perm2)
    x2 = h[perm2] * raw[perm2].unsqueeze(-1)
    torch.testing.assert_close(score1, raw[perm2])
    (g2,) = torch.autograd.grad(x2.square().sum(), pool.select.weight)
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)

    # the kept set varies between training steps, never in evaluation
    perms = {tuple(enc(b.x, b.edge_index, b.batch, 2).node_map.tolist()) for _ in range(5)}
    assert len(perms) > 1
    enc.eval()
    assert enc._perturbed_scores_input(pool, h) is None
    perms = {tuple(enc(b.x, b.edge_index, b.batch, 2).node_map.tolist()) for _ in range(3)}
    assert len(perms) == 1


def test_ratio_warmup_keeps_every_node_first_then_falls_to_the_target():
    b = batch_of([50, 30], seed=6)
    enc = GraphEncoder(5, 6, ratio=0.4, ratio_warmup=0.5, dropout=0.0)
    n = b.num_nodes

    def kept(progress, training=True):
        enc.train(training)
        enc.progress = progress
        return enc(b.x, b.edge_index, b.batch, 2).x.size(0)

    assert kept(0.0) == n  # both pooling layers keep every node
    # halfway through the warm-up the ratio is 0.7 per layer: ceil(0.7 ceil(0.7 m)) per graph
    expected = sum(math.ceil(0.7 * math.ceil(0.7 * m)) for m in (50, 30))
    assert kept(0.25) == expected
    target = sum(math.ceil(0.4 * math.ceil(0.4 * m)) for m in (50, 30))
    assert kept(0.5) == kept(0.9) == target
    assert kept(0.0, training=False) == target  # evaluation keeps the target ratio
    assert GraphEncoder(5, 6, ratio=0.4).train().current_ratio() == 0.4
    with pytest.raises(ValueError, match="ratio_warmup"):
        GraphEncoder(5, 6, ratio=0.4, ratio_warmup=1.0)


def test_scaling_folded_into_projection_equals_standardised_input():
    b = batch_of([40, 25], seed=2)
    torch.manual_seed(0)
    enc = GraphEncoder(5, 8, ratio=0.5).eval()
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    folded = enc(b.x, b.edge_index, b.batch, 2, scale=(mean, std))
    plain = enc((b.x - mean) / std, b.edge_index, b.batch, 2)
    torch.testing.assert_close(folded.x, plain.x, atol=1e-5, rtol=1e-5)
    # same kept nodes (nodes with tied scores may swap places: rounding)
    assert torch.equal(folded.node_map.sort().values, plain.node_map.sort().values)
    order_f, order_p = folded.node_map.argsort(), plain.node_map.argsort()
    torch.testing.assert_close(folded.target[order_f], plain.target[order_p])


@pytest.mark.parametrize("conv", ["gcn", "gcn_root", "gin"])
def test_encoder_under_autocast_keeps_sparse_products_in_float32(conv):
    """Mixed precision (CUDA's float16, here the CPU's bfloat16): the linear maps run in
    low precision, the sparse neighbourhood sums in float32; results stay close."""
    b = batch_of([40, 25], seed=4)
    torch.manual_seed(0)
    enc = GraphEncoder(5, 8, ratio=1.0, conv=conv).eval()
    ref = enc(b.x, b.edge_index, b.batch, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = enc(b.x, b.edge_index, b.batch, 2)
    assert low.x.dtype in (torch.float32, torch.bfloat16)
    torch.testing.assert_close(low.x.float(), ref.x, atol=0.05, rtol=0.05)


def test_folded_scaling_under_low_precision_autocast_standardises_first():
    """Raw features of large mean and small spread would overflow or cancel in float16 if
    the scaling were folded into the weights: under autocast they are standardised first."""
    torch.manual_seed(0)
    b = batch_of([60], seed=6)
    x = torch.randn(b.num_nodes, 5) * 1e3 + 1e5
    enc = GraphEncoder(5, 8, ratio=1.0).eval()
    mean, std = x.mean(0), x.std(0)
    ref = enc((x - mean) / std, b.edge_index, b.batch, 1).x
    with torch.autocast("cpu", dtype=torch.float16):
        low = enc(x, b.edge_index, b.batch, 1, scale=(mean, std)).x
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, atol=0.02, rtol=0.02)


def test_gin_propagation_uses_the_trained_epsilon():
    b = batch_of([12], seed=7)
    n = b.num_nodes
    closed = (dense_propagation(b.edge_index, n) > 0).float()  # A + I
    for eps in (0.0, 0.5, -0.4, -3.0):
        gin = as_dense(propagation_matrix(b.edge_index, n, "gin", eps), n)
        expected = closed - torch.eye(n) + max(1.0 + eps, 0.0) * torch.eye(n)
        expected = expected / expected.sum(1, keepdim=True)
        torch.testing.assert_close(gin, expected)


@pytest.mark.parametrize("folded", [True, False])
def test_centring_removes_a_per_graph_offset_and_equals_centring_the_input(folded):
    """With ``center``, adding a different constant vector to every node of each graph changes
    nothing, and the result equals encoding the explicitly centred (patch-weighted) features."""
    torch.manual_seed(0)
    b = batch_of([30, 45, 12], dim=6)
    counts = torch.randint(1, 9, (b.num_nodes,)).float()
    enc = GraphEncoder(6, 8, ratio=0.5, center=True, dropout=0.0).eval()
    scale = (torch.randn(6), torch.rand(6) + 0.5) if folded else None
    kw = dict(scale=scale, node_weight=counts)
    out = enc(b.x, b.edge_index, b.batch, 3, **kw)
    shifted = b.x + 3.0 * torch.randn(3, 6)[b.batch]
    moved = enc(shifted, b.edge_index, b.batch, 3, **kw)
    torch.testing.assert_close(moved.x, out.x, atol=1e-4, rtol=1e-4)
    assert_same_targets(moved, out, atol=1e-4, rtol=1e-4)
    # explicit centring of the standardised features, then the encoder without centring
    x = b.x if scale is None else (b.x - scale[0]) / scale[1]
    mean = torch.zeros(3, 6).index_add_(0, b.batch, x * counts[:, None])
    mean = mean / torch.zeros(3).index_add_(0, b.batch, counts)[:, None]
    plain = GraphEncoder(6, 8, ratio=0.5, dropout=0.0).eval()
    plain.load_state_dict(enc.state_dict())
    ref = plain(x - mean[b.batch], b.edge_index, b.batch, 3)
    torch.testing.assert_close(out.x, ref.x, atol=1e-5, rtol=1e-4)
    assert_same_targets(out, ref)
    assert not torch.allclose(plain(x, b.edge_index, b.batch, 3).x, ref.x)


@pytest.mark.parametrize("center", [False, True, "median"])
def test_projection_on_components_folded_equals_projecting_the_input(center):
    """``scale = (mean, std, components)``: the encoder equals a width-K encoder fed
    ``((x - mean) / std) @ components`` (centred per graph when asked), with or without
    autocast, and its reconstruction target is the projected features."""
    torch.manual_seed(0)
    b = batch_of([30, 45], dim=7, seed=3)
    counts = torch.randint(1, 9, (b.num_nodes,)).float()
    mean, std, comp = torch.randn(7), torch.rand(7) + 0.5, torch.randn(7, 3)
    enc = GraphEncoder(3, 8, ratio=0.5, center=center, dropout=0.0).eval()
    out = enc(b.x, b.edge_index, b.batch, 2, scale=(mean, std, comp), node_weight=counts)
    z = ((b.x - mean) / std) @ comp
    assert out.target.shape[1] == 3
    ref = enc(z, b.edge_index, b.batch, 2, node_weight=counts)
    torch.testing.assert_close(out.x, ref.x, atol=1e-5, rtol=1e-4)
    assert_same_targets(out, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = enc(b.x, b.edge_index, b.batch, 2, scale=(mean, std, comp), node_weight=counts)
    torch.testing.assert_close(low.x.float(), ref.x, atol=0.1, rtol=0.1)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return values[order][np.searchsorted(cumulative, cumulative[-1] / 2)]


@pytest.mark.parametrize("ties", [False, True])
def test_graph_median_numpy_and_torch_paths_agree_with_a_reference(ties):
    """The NumPy path (constant CPU features) and the torch path (features with a gradient)
    of the weighted median give the reference's values exactly: tied values, empty graphs
    and rows not grouped by graph included."""
    from radiopath.models.encoders import (
        _graph_median,
        _graph_median_numpy,
        _graph_median_torch,
    )

    gen = torch.Generator().manual_seed(4)
    sizes = torch.tensor([7, 0, 40, 1, 23])
    batch = torch.repeat_interleave(torch.arange(5), sizes)
    n = int(sizes.sum())
    x = torch.randint(-2, 3, (n, 4), generator=gen).float() if ties else torch.randn(n, 4)
    w = torch.randint(1, 6, (n,), generator=gen).float()
    expected = torch.zeros(5, 4)
    for g in range(5):
        rows = batch == g
        if rows.any():
            for d in range(4):
                expected[g, d] = float(_weighted_median(x[rows, d].numpy(), w[rows].numpy()))
    perm = torch.randperm(n, generator=gen)
    for xs, bs, ws in ((x, batch, w), (x[perm], batch[perm], w[perm])):
        assert torch.equal(_graph_median_numpy(xs, bs, 5, ws), expected)
        assert torch.equal(_graph_median_torch(xs, bs, 5, ws), expected)
        with_grad = _graph_median(xs.clone().requires_grad_(True), bs, 5, ws)
        assert with_grad.requires_grad and torch.equal(with_grad.detach(), expected)
        assert torch.equal(_graph_median(xs, bs, 5, ws), expected)


@pytest.mark.parametrize("folded", [True, False])
def test_median_centring_removes_an_offset_and_ignores_a_small_region(folded):
    """``center="median"``: a per-graph offset changes nothing; the result equals encoding the
    features minus their column-wise patch-weighted median (numpy reference); and, unlike
    the mean, the centring of the other nodes does not move when a small region shifts."""
    torch.manual_seed(0)
    b = batch_of([30, 45, 12], dim=6)
    counts = torch.randint(1, 9, (b.num_nodes,)).float()
    enc = GraphEncoder(6, 8, ratio=0.5, center="median", dropout=0.0).eval()
    scale = (torch.randn(6), torch.rand(6) + 0.5) if folded else None
    kw = dict(scale=scale, node_weight=counts)
    out = enc(b.x, b.edge_index, b.batch, 3, **kw)
    moved = enc(b.x + 3.0 * torch.randn(3, 6)[b.batch], b.edge_index, b.batch, 3, **kw)
    torch.testing.assert_close(moved.x, out.x, atol=1e-4, rtol=1e-4)
    x = b.x if scale is None else (b.x - scale[0]) / scale[1]
    median = torch.tensor(
        [
            [
                _weighted_median(x[b.batch == g, d].numpy(), counts[b.batch == g].numpy())
                for d in range(6)
            ]
            for g in range(3)
        ]
    )
    plain = GraphEncoder(6, 8, ratio=1.0, dropout=0.0).eval()
    both = GraphEncoder(6, 8, ratio=1.0, center="median", dropout=0.0).eval()
    both.load_state_dict(plain.state_dict())
    ref = plain(x - median[b.batch], b.edge_index, b.batch, 3)
    got = both(b.x, b.edge_index, b.batch, 3, **kw)
    torch.testing.assert_close(got.x, ref.x, atol=1e-5, rtol=1e-4)
    # A small region (3 nodes of the first graph) moved far up: once it is above every other
    # node the median no longer depends on how far, the mean moves with it.
    region = torch.zeros(b.num_nodes, dtype=torch.bool)
    region[:3] = True
    rest = (b.batch == 0) & ~region
    unit = scale[1] if folded else 1.0
    mean_enc = GraphEncoder(6, 8, ratio=1.0, center="mean", dropout=0.0).eval()
    centred = {}
    for name, encoder in (("median", both), ("mean", mean_enc)):
        for size in (50.0, 500.0):
            bumped = b.x + size * region[:, None].float() * unit
            centred[name, size] = encoder(bumped, b.edge_index, b.batch, 3, **kw).target[rest]
    torch.testing.assert_close(centred["median", 50.0], centred["median", 500.0])
    assert (centred["mean", 50.0] - centred["mean", 500.0]).abs().min() > 10.0


def test_symmetric_product_gradient_equals_torch_sparse_mm():
    """The backward that reuses the forward matrix is exact for an undirected graph."""
    g = random_graph(60, 4, seed=3)
    adj, _ = gcn_normalized_adjacency(g.edge_index, 60, torch.float32)
    h = torch.randn(60, 7, requires_grad=True)
    upstream = torch.randn(60, 7)
    torch.sparse.mm(adj, h).backward(upstream)
    expected, h.grad = h.grad.clone(), None
    out = symmetric_spmm(adj, h)
    out.backward(upstream)
    assert torch.allclose(out, torch.sparse.mm(adj, h.detach()))
    assert torch.allclose(h.grad, expected, atol=1e-6)
    assert torch.allclose(h.grad, adj.to_dense().T @ upstream, atol=1e-6)


def test_symmetric_product_refuses_a_trainable_adjacency():
    adj = torch.eye(3).to_sparse_csr().requires_grad_(True)
    with pytest.raises(ValueError, match="must not require a gradient"):
        symmetric_spmm(adj, torch.randn(3, 2))


@pytest.mark.parametrize("cls", [GCNConv, GCNRootConv])
def test_gcn_forward_is_the_out_of_place_sum_to_the_bit(cls):
    """The in-place propagation adds the terms in the order autograd would out of place:
    the same values and gradients to the last bit, not merely close."""
    b = batch_of([300, 2, 150, 80], dim=12, seed=5)
    torch.manual_seed(2)
    conv = cls(12, 16)
    torch.nn.init.normal_(conv.bias)
    x = b.x.clone().requires_grad_(True)
    upstream = torch.randn(x.size(0), 16)

    def reference(h):
        adj, self_weight = gcn_normalized_adjacency(b.edge_index, h.size(0), torch.float32)
        hw = conv.lin(h)
        out = symmetric_spmm(adj, hw) + self_weight.unsqueeze(-1) * hw
        out = out + conv.bias
        return out + conv.root(h) if isinstance(conv, GCNRootConv) else out

    results = []
    for forward in (lambda h: gcn_forward(conv, h, b.edge_index), reference):
        conv.zero_grad(set_to_none=True)
        x.grad = None
        out = forward(x)
        out.backward(upstream)
        grads = [p.grad.clone() for p in conv.parameters()]
        results.append((out.detach(), x.grad.clone(), grads))
    (out, gx, gp), (ref, ref_gx, ref_gp) = results
    assert torch.equal(out, ref)
    assert torch.equal(gx, ref_gx)
    assert len(gp) == len(ref_gp) >= 2 and all(map(torch.equal, gp, ref_gp))
