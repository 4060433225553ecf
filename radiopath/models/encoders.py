"""Graph encoders: the pooling module of SPARRA (Gao et al., MICCAI 2025, Sec. 2.2).

One encoder per modality maps a batch of graphs to a smaller set of hidden node vectors:

    input projection -> conv -> TopKPooling(k) -> conv -> TopKPooling(k)

so about :math:`k^2 m` of a graph's :math:`m` nodes survive. The encoder keeps the chain of
top-k permutations, so each surviving node knows which input node it came from
(``node_map``); node weights computed after pooling can then be written back to the input
nodes (dropped nodes get 0) and, through the graph's patch ``assignment``, to every patch.

With ``use_graph=False`` the convolutions and pooling are skipped: the encoder is the input
projection alone and every node (or patch) survives -- plain multiple-instance learning,
for ablating the graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, TopKPooling
from torch_geometric.nn.pool.connect.filter_edges import filter_adj
from torch_geometric.utils import scatter

from radiopath.models.dropout import Dropout
from radiopath.models.propagation import (
    GCNRootConv,
    autocast_enabled,
    gcn_forward,
    propagation_matrix,
    sparse_adjacency,
    symmetric_spmm,
)

CONVS = ("gcn", "gcn_root", "gin")
DROPOUT_POSITIONS = ("input", "pooled")
IMPORTANCE_MODES = ("selection", "receptive_field")
CENTERS = (False, True, "mean", "median")


@dataclass
class EncodedGraphs:
    """What an encoder hands to an aggregator.

    Attributes
    ----------
    x
        ``[M, H]`` hidden vectors of the surviving nodes.
    batch
        ``[M]`` graph index of each surviving node.
    node_map
        ``[M]`` index of each surviving node among the *input* nodes of the batch.
    target
        ``[M, D]`` the surviving nodes' input features (what SPARRA's decoder reconstructs).
    edges
        Edges among the surviving nodes (``[2, E']``, re-indexed to ``x``), or, as the
        encoder leaves them, ``(edge_index, perm, n)``: the edges before the last top-k
        selection, filtered on first use of :attr:`edge_index` (the aggregators do not
        read them, so a training step does not pay for it).
    num_graphs
        Number of graphs in the batch.
    num_input_nodes
        Number of input nodes in the batch.
    trace
        The encoder's steps in order, for :meth:`input_node_weights`: ``("conv", P)`` with
        ``P`` the row-stochastic propagation matrix of a convolution (COO ``(index,
        value)``, rows = output nodes; :func:`propagation_matrix`), ``("pool", perm, n)`` for a top-k selection of ``perm`` among ``n``
        nodes.
    """

    x: Tensor
    batch: Tensor
    node_map: Tensor
    target: Tensor
    edges: Tensor | tuple
    num_graphs: int
    num_input_nodes: int
    trace: list = field(default_factory=list)

    @property
    def edge_index(self) -> Tensor:
        """``[2, E']`` edges among the surviving nodes, re-indexed to ``x``."""
        if isinstance(self.edges, tuple):
            edge_index, perm, n = self.edges
            self.edges = filter_adj(edge_index, None, perm, num_nodes=n)[0]
        return self.edges

    def input_node_weights(self, weight: Tensor, mode: str = "selection") -> Tensor:
        r"""Per-surviving-node weights written back to every input node.

        ``"selection"`` (the paper and the reference code): each surviving node's weight
        goes to the input node it was selected from, through each top-k permutation;
        dropped nodes get 0.

        ``"receptive_field"``: the weight flows back through the convolutions as well. A
        surviving node's hidden vector is a mix of its neighbours' vectors with the
        convolution's propagation coefficients (GCN: :math:`\hat A_{ij}`); each node passes
        its weight to the nodes it read from in proportion to those coefficients (rows of
        :math:`\hat A` normalised to 1), then through the top-k permutation before it, down
        to the input nodes. Weight is conserved (it still sums to 1 per graph for SPARRA and
        ABMIL); input nodes outside every surviving node's receptive field (two hops) get 0.
        """
        if mode not in IMPORTANCE_MODES:
            raise ValueError(f"importance mode must be one of {IMPORTANCE_MODES}, got {mode!r}")
        if mode == "selection" or not self.trace:
            out = weight.new_zeros(self.num_input_nodes)
            return out.index_copy(0, self.node_map, weight)
        w = weight
        for step in reversed(self.trace):
            if step[0] == "pool":
                _, perm, n = step
                w = w.new_zeros(n).index_copy(0, perm, w)
            else:  # w_in = P^T w: each node passes its weight to the nodes it read from
                (row, col), value = step[1]
                w = torch.zeros_like(w).index_add_(0, col, (w[row] * value).to(w.dtype))
        return w


def _graph_mean(x: Tensor, batch: Tensor, num_graphs: int, weight: Tensor | None) -> Tensor:
    """``[num_graphs, D]`` mean of each graph's rows of ``x``, weighted by ``weight`` ``[N]``."""
    w = torch.ones_like(batch, dtype=x.dtype) if weight is None else weight.to(x.dtype)
    total = scatter(x * w.unsqueeze(-1), batch, 0, num_graphs, reduce="sum")
    count = scatter(w, batch, 0, num_graphs, reduce="sum")
    return total / count.clamp(min=torch.finfo(x.dtype).tiny).unsqueeze(-1)


def _graph_median(x: Tensor, batch: Tensor, num_graphs: int, weight: Tensor | None) -> Tensor:
    """``[num_graphs, D]`` column-wise weighted (lower) median of each graph's rows of ``x``:
    the first sorted value whose cumulative ``weight`` reaches half the graph's total.

    Constant features (no gradient) on the CPU go through NumPy's sort, several times
    faster than torch's on these column sorts (:func:`_graph_median_numpy`; the same
    values, tested); anything else through torch (:func:`_graph_median_torch`)."""
    w = torch.ones_like(batch, dtype=x.dtype) if weight is None else weight.to(x.dtype)
    numpy_ok = x.dtype in (torch.float32, torch.float64) and x.device.type == "cpu"
    if numpy_ok and not (x.requires_grad or w.requires_grad):
        return _graph_median_numpy(x, batch, num_graphs, w)
    return _graph_median_torch(x, batch, num_graphs, w)


def _graph_median_torch(x: Tensor, batch: Tensor, num_graphs: int, w: Tensor) -> Tensor:
    out = x.new_zeros(num_graphs, x.size(1))
    for g in range(num_graphs):
        rows = (batch == g).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        values, order = x[rows].sort(0)
        cumulative = w[rows][order].cumsum(0)
        k = (cumulative < cumulative[-1:] / 2).sum(0).clamp(max=rows.numel() - 1)
        out[g] = values.gather(0, k.unsqueeze(0)).squeeze(0)
    return out


def _graph_median_numpy(x: Tensor, batch: Tensor, num_graphs: int, w: Tensor) -> Tensor:
    """:func:`_graph_median_torch` through NumPy: the same order statistic (tied rows hold
    equal values, so their order does not matter; integer patch counts sum exactly in
    either library)."""
    xs, bs, ws = x.numpy(), batch.numpy(), w.numpy()
    out = np.zeros((num_graphs, x.size(1)), dtype=xs.dtype)
    if bs.size and (bs[1:] >= bs[:-1]).all():  # batches hold each graph's rows together
        bounds = np.searchsorted(bs, np.arange(num_graphs + 1))
        groups = [np.arange(bounds[g], bounds[g + 1]) for g in range(num_graphs)]
    else:
        groups = [np.flatnonzero(bs == g) for g in range(num_graphs)]
    for g, rows in enumerate(groups):
        if rows.size == 0:
            continue
        block = xs[rows]
        order = np.argsort(block, axis=0)  # ties hold equal values: any order
        cumulative = np.cumsum(ws[rows][order], axis=0, dtype=ws.dtype)
        k = np.minimum((cumulative < cumulative[-1:] / 2).sum(0), rows.size - 1)
        picked = np.take_along_axis(order, k[None, :], 0)[0]
        out[g] = block[picked, np.arange(block.shape[1])]
    return torch.from_numpy(out)


def graph_location(
    x: Tensor, batch: Tensor, num_graphs: int, weight: Tensor | None, kind: str
) -> Tensor:
    """Each graph's ``"mean"`` or ``"median"`` row (``[num_graphs, D]``, weighted)."""
    if kind == "median":
        return _graph_median(x, batch, num_graphs, weight)
    return _graph_mean(x, batch, num_graphs, weight)


def _make_conv(kind: str, hidden: int) -> nn.Module:
    if kind == "gcn":
        return GCNConv(hidden, hidden)
    if kind == "gcn_root":
        return GCNRootConv(hidden, hidden)
    if kind == "gin":
        return GINConv(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)),
            train_eps=True,
        )
    raise ValueError(f"conv must be one of {CONVS}, got {kind!r}")


def _apply_input_map(x: Tensor, scale: tuple) -> Tensor:
    """``(x - mean) / std``, then the projection on ``components`` when ``scale`` has one."""
    z = (x - scale[0]) / scale[1]
    return z if len(scale) < 3 else z @ scale[2]


class GraphEncoder(nn.Module):
    r"""Input projection, then two rounds of graph convolution and top-k pooling.

    .. math::
        H^{(0)} = \mathrm{Dropout}(\mathrm{ReLU}(X W_{\text{in}})),\quad
        H^{(l)}, \pi^{(l)} = \mathrm{TopK}_k\big(\mathrm{ReLU}(\mathrm{Conv}(H^{(l-1)}, A^{(l-1)}))\big)

    with :math:`\pi^{(l)}` the indices kept by the :math:`l`-th pooling, whose kept nodes are
    scaled by the gate :math:`\sigma(\mathbf{h}_i^\top\mathbf{p}/\lVert\mathbf{p}\rVert)`
    (:class:`torch_geometric.nn.TopKPooling`, Gao & Ji 2019; Cangea et al. 2018). The paper
    uses GCN convolutions (Kipf & Welling 2017) and :math:`k = 0.2`; the reference code uses
    GIN (Xu et al. 2019) with :math:`k = 0.7` for CT and 0.2 for WSI graphs.

    Args:
        in_channels: input feature width :math:`D`.
        hidden_channels: hidden width :math:`H` (``n_h`` in the paper).
        ratio: top-k pooling ratio :math:`k \in (0, 1]`; 1 keeps every node (no pooling).
        conv: ``"gcn"``, ``"gcn_root"`` (GCN with a weight of its own on each node's row,
            :class:`~radiopath.models.propagation.GCNRootConv`) or ``"gin"``.
        dropout: dropout after the input projection.
        use_graph: when False, only the input projection is applied (no convolution or
            pooling): every node survives, so the aggregator does plain MIL over the nodes.
        nonlinearity: gate of :class:`~torch_geometric.nn.TopKPooling` (``"sigmoid"``
            default, ``"tanh"`` PyG's default).
        multiplier: PyG's ``multiplier`` applied to the kept, gated features.
        dropout_position: ``"input"`` (default) applies ``dropout`` after the input
            projection, so the top-k scores are computed on dropped-out features in
            training; ``"pooled"`` applies it to the surviving nodes only, so the selection
            sees clean features (training- and evaluation-mode selections agree). The paper
            gives dropout 0.5 without saying where. Measured (single runs): "pooled" kept
            more planted nodes on the small synthetic cohort (29% against 23% of the kept
            nodes; benchmarks/bench_importance.py), but gave a lower downstream C-index at
            the paper's cohort size (0.646 against 0.698; benchmarks/bench_pipeline.py), so
            "input" stays the default and the ``interpretable`` preset uses "pooled".
            Without a graph (``use_graph=False``) both act on the same vectors.
        score_noise: scale :math:`\tau` of the Gumbel noise added to the top-k scores in
            training (Gumbel-top-k exploration; 0, the default, is PyG's deterministic
            top-k; see :meth:`_perturbed_scores_input`).
        ratio_warmup: fraction of training over which the pooling ratio falls linearly from
            keeping every node to ``ratio`` (0: ``ratio`` throughout). Training reports its
            progress through :attr:`progress` (0 at the first step, 1 at the end); the
            selection then starts as a soft gate over every node, so each node's score gets
            a gradient before the cut drops any, rather than only the nodes an untrained
            projection happens to keep. Evaluation always keeps ``ratio``.

        importance: how the aggregator's weights of the surviving nodes are traced back
            to the input nodes (:meth:`EncodedGraphs.input_node_weights`): ``"selection"``
            (the paper and the reference code: through the top-k permutations, dropped nodes
            0) or ``"receptive_field"`` (also back through each convolution's propagation
            coefficients, so a surviving node shares its weight with the nodes it read
            from).
        center: subtract each graph's mean input vector (weighted by ``node_weight``, the
            patches behind each node, when given) from its nodes before the first
            nonlinearity, so that a patient-level offset shared by every patch of a bag (a
            scanner, stain or reconstruction-kernel effect) cannot reach the model, and
            each node is read against the rest of its bag (``True`` or ``"mean"``).
            ``"median"``: minus the column-wise weighted median of the mapped features,
            which a small region barely moves, so the other nodes do not carry minus the
            region's share of its shift (a blurred way to read it without selecting it).

    Notes:
        With ``importance="selection"``, nodes dropped by pooling get 0 (as in the reference
        code), so with :math:`k = 0.2` twice only about 4% of the nodes can carry
        importance: when the relevant tissue covers a fraction :math:`f` of the patches,
        even a perfect selection ranks them with an AUC of only about
        :math:`0.5 + 0.5 \min(1, k^2/f)` (0.71 on the demo cohort, whose planted regions
        cover 4-20% of the patches). ``"receptive_field"`` lifts that ceiling. The selection
        itself is learnt only through the gate of the *kept* nodes (dropped nodes get no
        gradient), which is why Gumbel exploration (``score_noise``), a larger learning rate
        for the pooling projections and ``dropout_position="pooled"`` help it (the
        ``interpretable`` training preset).

    Shapes:
        input: a PyG ``Batch`` with ``x`` ``[N, D]``, ``edge_index`` ``[2, E]``, ``batch`` ``[N]``.
        output: :class:`EncodedGraphs` with ``x`` ``[M, H]``.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 128,
        ratio: float = 0.2,
        conv: str = "gcn",
        dropout: float = 0.5,
        use_graph: bool = True,
        nonlinearity: str = "sigmoid",
        multiplier: float = 1.0,
        dropout_position: str = "input",
        importance: str = "selection",
        score_noise: float = 0.0,
        center: bool | str = False,
        ratio_warmup: float = 0.0,
    ) -> None:
        super().__init__()
        if importance not in IMPORTANCE_MODES:
            raise ValueError(f"importance must be one of {IMPORTANCE_MODES}, got {importance!r}")
        if dropout_position not in DROPOUT_POSITIONS:
            raise ValueError(
                f"dropout_position must be one of {DROPOUT_POSITIONS}, got {dropout_position!r}"
            )
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"pooling ratio must be in (0, 1], got {ratio}")
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {CONVS}, got {conv!r}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.ratio = ratio
        self.conv_kind = conv
        self.use_graph = use_graph
        self.dropout_position = dropout_position
        self.importance = importance
        self.score_noise = float(score_noise)
        if not 0.0 <= ratio_warmup < 1.0:
            raise ValueError(f"ratio_warmup must be in [0, 1), got {ratio_warmup}")
        self.ratio_warmup = float(ratio_warmup)
        self.progress = 1.0  # of training; set by the training loop, read by ratio_warmup
        if center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
        # "" (none), "mean" or "median"; True means "mean"
        self.center = {False: "", True: "mean"}.get(center, center)
        self.project = nn.Sequential(
            nn.Linear(in_channels, hidden_channels),
            nn.ReLU(),
            Dropout(dropout if dropout_position == "input" else 0.0),
        )
        self.output_dropout = Dropout(dropout if dropout_position == "pooled" else 0.0)
        if use_graph:
            self.convs = nn.ModuleList([_make_conv(conv, hidden_channels) for _ in range(2)])
            # ratio 1 keeps every node: no pooling layer (PyG would read 1.0 as "keep 1 node").
            # The gate is a sigmoid, not PyG's default tanh: a tanh gate can flip a node's sign,
            # so a node's influence would not grow with its score and the kept set would not be
            # the nodes that matter (seen on the synthetic cohort: importance AUC below 0.5).
            self.pools = nn.ModuleList(
                [
                    TopKPooling(
                        hidden_channels,
                        ratio=ratio,
                        nonlinearity=nonlinearity,
                        multiplier=multiplier,
                    )
                    for _ in range(2 if ratio < 1.0 else 0)
                ]
            )
        else:
            self.convs = nn.ModuleList()
            self.pools = nn.ModuleList()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.project:
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        for module in (*self.convs, *self.pools):
            module.reset_parameters()

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        batch: Tensor,
        num_graphs: int,
        trace: bool | None = None,
        scale: tuple[Tensor, Tensor] | None = None,
        node_weight: Tensor | None = None,
        center: bool | str | None = None,
    ) -> EncodedGraphs:
        r"""Encode a batch of graphs.

        ``trace`` (default: when this encoder's ``importance`` is ``"receptive_field"`` and
        it is in evaluation mode) records the propagation matrices needed to trace weights
        back through the convolutions. ``scale = (mean, std)`` standardises the input
        features, ``(x - mean) / std``, and ``scale = (mean, std, components)`` then
        projects them on ``components`` ``[D, K]`` (e.g. whitened principal components);
        the map is folded into the input projection (:math:`W' = W P^T / \sigma`,
        :math:`b' = b - W'\mu`), so the transformed ``[N, K]`` copy of ``x`` is never made
        (only the surviving nodes' rows, the ``target``).
        With ``center``, each graph's mean (standardised) input vector is projected and
        subtracted after the linear projection, which equals projecting centred features;
        ``node_weight`` ``[N]`` weighs each node in its graph's mean (e.g. its patch count,
        so the mean is the bag's patch mean). The same mean centres the ``target``.
        ``center`` overrides the encoder's setting for this call (False for features
        centred beforehand, :meth:`MultimodalSurvivalModel.map_input`).
        """
        if trace is None:
            trace = self.importance == "receptive_field" and not self.training
        n_input = x.size(0)
        h, x_mean = self._project_input(
            x, batch, num_graphs, scale, node_weight, self.center if center is None else center
        )
        h, edge_index, batch, node_map, steps = self._convolve_and_pool(
            h, edge_index, batch, torch.arange(n_input, device=x.device), trace
        )
        target = x[node_map] if scale is None else _apply_input_map(x[node_map], scale)
        if x_mean is not None:  # the decoder reconstructs the centred input features
            target = target - x_mean[batch]
        return EncodedGraphs(
            x=self.output_dropout(h),
            batch=batch,
            node_map=node_map,
            target=target,
            edges=edge_index,
            num_graphs=num_graphs,
            num_input_nodes=n_input,
            trace=steps,
        )

    def _project_input(
        self,
        x: Tensor,
        batch: Tensor,
        num_graphs: int,
        scale: tuple | None,
        node_weight: Tensor | None,
        center: bool | str,
    ) -> tuple[Tensor, Tensor | None]:
        """``H^(0)``: the input projection with ``scale`` folded in and, with ``center``,
        each graph's mean subtracted; returns ``(h, x_mean)`` (``x_mean`` ``[G, D']`` the
        graphs' mean input vectors, ``None`` without centring)."""
        lin = self.project[0]
        if scale is None:
            z = nn.functional.linear(x, lin.weight)
        elif autocast_enabled(x.device.type):
            # Low precision would see the raw features and W / sigma (overflow, and
            # cancellation of large means): transform first, as without folding.
            z = nn.functional.linear(_apply_input_map(x, scale), lin.weight)
        else:
            weight = lin.weight if len(scale) < 3 else lin.weight @ scale[2].T
            weight = weight / scale[1]
            z = nn.functional.linear(x, weight, -(weight @ scale[0]))
        x_mean = None
        if center == "median":  # the median of the mapped features (a map moves it otherwise)
            mapped = x.float() if scale is None else _apply_input_map(x.float(), scale)
            x_mean = _graph_median(mapped, batch, num_graphs, node_weight)
        elif center:  # the map is affine: map the mean of the raw features
            x_mean = _graph_mean(x.float(), batch, num_graphs, node_weight)
            if scale is not None:
                x_mean = _apply_input_map(x_mean, scale)
        if x_mean is not None:
            z = z - nn.functional.linear(x_mean.to(z.dtype), lin.weight)[batch]
        # project[1:] is ReLU then Dropout, which Dropout.after_relu runs as one product
        return self.project[2].after_relu(z + lin.bias), x_mean

    def _convolve_and_pool(
        self, h: Tensor, edge_index: Tensor, batch: Tensor, node_map: Tensor, trace: bool
    ) -> tuple[Tensor, Tensor | tuple, Tensor, Tensor, list]:
        """The rounds of convolution and top-k pooling; returns the surviving nodes'
        ``(h, edges, batch, node_map)`` (``edges`` as :attr:`EncodedGraphs.edges`) and the
        trace steps (empty without ``trace``)."""
        steps: list = []
        for layer, conv in enumerate(self.convs):
            if trace:
                eps = float(conv.eps) if isinstance(conv, GINConv) else 0.0
                steps.append(
                    ("conv", propagation_matrix(edge_index, h.size(0), self.conv_kind, eps))
                )
            # A sparse adjacency lets PyG aggregate by sparse-dense matrix product instead of
            # materialising one message per edge ([E, H]: gigabytes for a batch of 32
            # graphs with 10k nodes). Graphs are symmetric, so A equals its transpose.
            if isinstance(conv, GCNConv):
                h = torch.relu(gcn_forward(conv, h, edge_index))
            else:
                h = torch.relu(self._gin_forward(conv, h, edge_index))
            if layer < len(self.pools):
                n_before = h.size(0)
                pool = self.pools[layer]
                pool.ratio = pool.select.ratio = self.current_ratio()
                # no convolution reads the last selection's edges: PyG's pooling gets none,
                # and they are filtered only if asked for (EncodedGraphs.edge_index)
                last = layer == len(self.convs) - 1
                h, pooled_edges, _, batch, perm, _ = pool(
                    h,
                    edge_index[:, :0] if last else edge_index,
                    batch=batch,
                    attn=self._perturbed_scores_input(pool, h),
                )
                edge_index = (edge_index, perm, n_before) if last else pooled_edges
                node_map = node_map[perm]
                if trace:
                    steps.append(("pool", perm, n_before))
        return h, edge_index, batch, node_map, steps

    @staticmethod
    def _gin_forward(conv: GINConv, h: Tensor, edge_index: Tensor) -> Tensor:
        """GIN over a sparse adjacency; the sparse sum in float32 with autocast off (no
        bfloat16 sparse kernels on the CPU), the MLP under autocast as usual."""
        h = h.to(torch.promote_types(h.dtype, torch.float32))
        adj = sparse_adjacency(edge_index, h.size(0), h.dtype)
        with torch.autocast(h.device.type, enabled=False):
            summed = (1 + conv.eps) * h + symmetric_spmm(adj, h)
        return conv.nn(summed)

    def current_ratio(self) -> float:
        """The pooling ratio of this forward pass: ``ratio``, or in training with
        ``ratio_warmup`` the warm-up's value at :attr:`progress` (below 1: PyG reads a ratio
        of 1 as "keep one node")."""
        if not self.training or self.ratio_warmup <= 0 or self.progress >= self.ratio_warmup:
            return self.ratio
        share = max(self.progress, 0.0) / self.ratio_warmup
        return min(1.0 + (self.ratio - 1.0) * share, 1.0 - 1e-6)

    def _perturbed_scores_input(self, pool: TopKPooling, h: Tensor) -> Tensor | None:
        r"""Gumbel-top-k exploration (Kool et al. 2019): in training, the top-k scores
        :math:`h_i^\top p / \lVert p\rVert` become :math:`\ldots + \tau g_i` with
        :math:`g_i \sim \mathrm{Gumbel}(0, 1)`, so the kept set is a sample of
        :math:`k` nodes without replacement from :math:`\mathrm{softmax}(\text{score}/\tau)`
        and nodes just below the cut get kept (and a gradient) now and then. Passed to
        :class:`~torch_geometric.nn.TopKPooling` as its ``attn`` input: adding
        :math:`\tau g_i \hat p` (direction detached) to :math:`h_i` shifts the score by
        exactly :math:`\tau g_i`, and the score's derivative with respect to :math:`p` is
        that of the clean score. The kept nodes are gated with the perturbed score,
        :math:`\sigma(s_i + \tau g_i)`, so in training the noise also acts on the gates
        (evaluation uses the clean scores). ``None`` (use ``h``) in evaluation or when
        :math:`\tau = 0`."""
        if not self.training or self.score_noise <= 0:
            return None
        p = pool.select.weight.detach().view(-1)
        gumbel = -torch.log(-torch.log(torch.rand(h.size(0), device=h.device).clamp_(1e-10, 1.0)))
        return h + (self.score_noise * gumbel).unsqueeze(-1) * (p / p.norm()).to(h.dtype)

    def __repr__(self) -> str:
        if not self.use_graph:
            return f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, use_graph=False)"
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels}, "
            f"conv={self.conv_kind}, ratio={self.ratio})"
        )
