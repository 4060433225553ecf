"""Sparse graph propagation for the encoders: the GCN-normalised adjacency without PyG's
per-call sort, a symmetric sparse product whose backward reuses the forward matrix, and the
row-stochastic propagation matrices that trace node weights back through a convolution.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_torch_csr_tensor


def sparse_adjacency(edge_index: Tensor, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``edge_index`` as a sparse CSR matrix (rows = targets; the graphs are symmetric).

    CSR only needs the edges grouped by row. Graph files and their batches come row-sorted,
    so the ``O(E log E)`` sort is skipped when an ``O(E)`` check finds the rows in order
    (top-k pooling re-numbers nodes, so pooled graphs are sorted here).
    """
    edge_index = _row_sorted(edge_index)
    ones = torch.ones(edge_index.size(1), dtype=dtype, device=edge_index.device)
    return _csr(edge_index, ones, n)


def _csr(edge_index: Tensor, values: Tensor, n: int) -> Tensor:
    """``[n, n]`` sparse CSR matrix of row-sorted ``edge_index`` with ``values``."""
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return to_torch_csr_tensor(edge_index, values, size=(n, n), is_coalesced=True)


class _SymmetricSparseProduct(torch.autograd.Function):
    """``adj @ h`` for a symmetric sparse ``adj`` (no gradient), whose backward is ``adj @ g``.

    :func:`torch.sparse.mm`'s backward multiplies by the transpose of a CSR matrix, which it
    builds at every step (a conversion through COO and a sort); an undirected graph's
    adjacency is its own transpose, so the forward matrix serves both ways.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, h: Tensor) -> Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, h)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, torch.sparse.mm(ctx.adj, grad)


class _GCNPropagation(torch.autograd.Function):
    r"""``adj @ hw + self_weight * hw + bias``, :math:`\hat A (H W) + b` from the parts of
    :func:`gcn_normalized_adjacency`, for a symmetric ``adj`` (no gradient).

    The sum is formed in the sparse product's output, in place, in the order autograd would
    add the terms out of place, so the values are the same to the bit (tested) without
    three ``[N, H]`` temporaries in each pass; the backward reuses the forward matrix
    (:class:`_SymmetricSparseProduct`) and adds the self-loop term to its product.
    """

    @staticmethod
    def forward(ctx, adj: Tensor, self_weight: Tensor, hw: Tensor, bias: Tensor | None):
        ctx.adj, ctx.self_weight = adj, self_weight
        out = torch.sparse.mm(adj, hw)
        out.add_(self_weight * hw)
        if bias is not None:
            out.add_(bias)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_hw = None
        if ctx.needs_input_grad[2]:
            grad_hw = torch.sparse.mm(ctx.adj, grad)
            grad_hw.add_(ctx.self_weight * grad)
        grad_bias = grad.sum(0) if ctx.needs_input_grad[3] else None
        return None, None, grad_hw, grad_bias


def symmetric_spmm(adj: Tensor, h: Tensor) -> Tensor:
    """``adj @ h`` for a symmetric sparse ``adj`` (undirected graph), differentiable in ``h``."""
    if adj.requires_grad:
        raise ValueError("symmetric_spmm: the adjacency must not require a gradient")
    return _SymmetricSparseProduct.apply(adj, h)


def _row_sorted(edge_index: Tensor) -> Tensor:
    """``edge_index`` with its edges grouped by row (target); an ``O(E)`` check skips the sort."""
    row = edge_index[0]
    if row.numel() > 1 and not bool((row[1:] >= row[:-1]).all()):
        edge_index = edge_index[:, torch.argsort(row, stable=True)]
    return edge_index


def gcn_normalized_adjacency(
    edge_index: Tensor, n: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    r"""The GCN propagation matrix :math:`\hat A = D^{-1/2}(A + I)D^{-1/2}`, split in two parts.

    Kipf & Welling (2017), Eq. 2, with :math:`D_{ii} = 1 + \sum_j A_{ij}` the degree with the
    self-loop. Returns the off-diagonal part :math:`D^{-1/2} A D^{-1/2}` as a sparse CSR
    matrix (edge weights :math:`1/\sqrt{d_i d_j}`) and the self-loop weights
    :math:`1/d_i`, so that :math:`\hat A H = (D^{-1/2} A D^{-1/2}) H + D^{-1} H`.

    This is what :func:`torch_geometric.nn.conv.gcn_conv.gcn_norm` computes for an
    (unweighted) sparse adjacency, but without inserting the self-loops into the edge list:
    PyG adds them with a coalesce, i.e. a sort of all :math:`E + N` entries at every call,
    which dominated the training step on CPU. Here the degrees are a ``bincount`` of the
    (row-sorted) edge rows and the weights one gather per edge: :math:`O(E + N)`, no sort
    when the rows are already grouped (input graphs and their batches are).

    Args:
        edge_index: ``[2, E]`` edges of an undirected graph without edge weights (existing
            self-loops count as edges, as in PyG's sparse path, which adds one more).
        n: number of nodes.
        dtype: floating dtype of the weights.

    Returns:
        ``(adj, self_weight)``: ``[n, n]`` sparse CSR matrix and ``[n]`` tensor.
    """
    edge_index = _row_sorted(edge_index)
    weight, self_weight = _gcn_weights(edge_index, n, dtype)
    return _csr(edge_index, weight, n), self_weight


def _gcn_weights(edge_index: Tensor, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    r"""Edge weights :math:`1/\sqrt{d_i d_j}` and self-loop weights :math:`1/d_i` of
    :math:`\hat A`, with :math:`d_i = 1 + \sum_j A_{ij}` (any edge order)."""
    row, col = edge_index[0], edge_index[1]
    deg = torch.bincount(row, minlength=n).to(dtype) + 1.0
    deg_inv_sqrt = deg.rsqrt()
    return deg_inv_sqrt[row] * deg_inv_sqrt[col], deg.reciprocal()


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def propagation_matrix(
    edge_index: Tensor, n: int, conv: str = "gcn", eps: float = 0.0
) -> tuple[Tensor, Tensor]:
    r"""Row-stochastic ``[n, n]`` matrix of how much each node reads from each node, as
    ``(index [2, E + n], value [E + n])`` in COO form (rows = reading nodes, self-loops
    appended).

    GCN (and ``gcn_root``, whose root term reads only the node itself, which the self-loop
    of :math:`\hat A` already covers): the rows of :math:`\hat A = D^{-1/2}(A + I)D^{-1/2}`
    divided by their sums. GIN
    sums the closed neighbourhood with the node itself weighted by :math:`1 + \epsilon`
    (``eps``, GIN's trained :math:`\epsilon`; clamped at 0): rows
    :math:`(1+\epsilon, 1, \ldots, 1) / (d_i + 1 + \epsilon)`. Used to trace node weights
    back through a convolution (:meth:`EncodedGraphs.input_node_weights`), not for
    message passing.
    """
    row = edge_index[0]
    if conv in ("gcn", "gcn_root"):
        weight, self_weight = _gcn_weights(edge_index, n, torch.float32)
        total = self_weight.index_add(0, row, weight)
    else:
        deg = torch.bincount(row, minlength=n).to(torch.float32)
        self_weight = torch.full_like(deg, max(1.0 + float(eps), 0.0))
        weight, total = torch.ones_like(deg[row]), deg + self_weight
        # an isolated node with 1 + eps <= 0 reads nothing; it keeps its own weight
        empty = total <= 0
        self_weight, total = self_weight.masked_fill(empty, 1.0), total.masked_fill(empty, 1.0)
    loops = torch.arange(n, device=edge_index.device)
    index = torch.cat([edge_index, torch.stack([loops, loops])], 1)
    values = torch.cat([weight / total[row], self_weight / total])
    return index, values


class GCNRootConv(GCNConv):
    r"""A GCN layer with a separate weight on each node's own row:
    :math:`\hat A H W + H W_{root} + b` (``conv: gcn_root``).

    GCN's propagation weighs a node's own row like its neighbours' (the self-loop of
    :math:`\hat A`), so one layer cannot form the contrast between a node and its
    surroundings; a root weight, as in GraphSAGE and PyG's ``GraphConv``, can. That contrast
    is what tells a marked region from the tissue around it when the tissue types themselves
    vary along the marker (``benchmarks/README.md``, the recipe section). ``forward`` is PyG's
    GCN plus the root term; the encoders go through :func:`gcn_forward`, which adds it too.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels)
        self.root = torch.nn.Linear(in_channels, out_channels, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "root"):  # GCNConv's constructor resets before the root exists
            self.root.reset_parameters()

    def forward(self, x: Tensor, edge_index, edge_weight=None) -> Tensor:
        return super().forward(x, edge_index, edge_weight) + self.root(x)


def gcn_forward(conv: GCNConv, h: Tensor, edge_index: Tensor) -> Tensor:
    r"""``conv(h, A)`` of a :class:`~torch_geometric.nn.GCNConv` with its own normalisation.

    Uses the layer's parameters as PyG does, :math:`\hat A (H W) + b`, with :math:`\hat A`
    from :func:`gcn_normalized_adjacency` (equal to ``GCNConv(normalize=True)`` up to float
    rounding; checked in the tests), through :class:`_GCNPropagation`.

    Under autocast the linear map runs in the low-precision type and the sparse product in
    float32 (sparse kernels have no bfloat16 on the CPU), with autocast off around it. A
    :class:`GCNRootConv` adds its root term :math:`H W_{root}`.
    """
    dtype = torch.promote_types(h.dtype, torch.float32)
    adj, self_weight = gcn_normalized_adjacency(edge_index, h.size(0), dtype)
    hw = conv.lin(h).to(dtype)
    with torch.autocast(h.device.type, enabled=False):
        out = _GCNPropagation.apply(adj, self_weight.unsqueeze(-1), hw, conv.bias)
    if isinstance(conv, GCNRootConv):
        out = out + conv.root(h)
    return out
