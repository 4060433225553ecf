r"""The multimodal survival model: one graph encoder and aggregator per modality, one head.

A patient's vector is, by default, the concatenation of its modality vectors, as in SPARRA
(:math:`\mathbf{x} = [\hat v_r^\top f_{pool}(X_r), \hat v_p^\top f_{pool}(X_p)]`, Gao et al.
2025, Sec. 2.2); ``fusion="mean"`` or ``"attention"`` fuse them otherwise
(:mod:`radiopath.models.fusion`). A single-modality model simply has one branch. The
``clinical`` modality is a patient's encoded clinical variables, read by an MLP
(:class:`~radiopath.models.fusion.ClinicalBranch`) instead of a graph encoder.

**Missing modalities.** A patient without a graph for modality ``m`` gets, in ``m``'s slot,
a *learned* vector ``missing[m]`` (one per modality, trained with the rest of the model),
never a vector of zeros that the linear head would silently read as "average tissue".
With ``missing_indicator=True`` (the training code turns it on when some patient of the
cohort lacks a requested modality) a 0/1 presence column per modality is appended too, so
downstream models that see the exported embedding can tell an imputed slot from a measured
one. A patient's risk never depends on another patient's graphs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from radiopath.models.aggregators import AggregationOutput, make_aggregator
from radiopath.models.encoders import GraphEncoder
from radiopath.models.fusion import ClinicalBranch, ModalityFusion
from radiopath.models.losses import (
    binary_horizon_loss,
    cox_loss,
    discrete_time_nll,
    discrete_time_risk,
    time_to_bin,
)

HEADS = ("cox", "discrete", "binary")
CLINICAL = "clinical"


@dataclass
class ModalityBatch:
    """The graphs of one modality in a batch of patients.

    Attributes
    ----------
    graphs
        A PyG :class:`~torch_geometric.data.Batch` of the patients that have this modality
        (one graph per patient; several slides are merged before batching).
    patient_index
        ``[G]`` long: the row of each graph's patient in the batch.
    mapped
        The node features have already been through the model's input map and centring
        (:meth:`MultimodalSurvivalModel.map_input`), so the encoder reads them as they are.
    """

    graphs: Batch
    patient_index: Tensor
    mapped: bool = False

    def to(self, device) -> ModalityBatch:
        return ModalityBatch(self.graphs.to(device), self.patient_index.to(device), self.mapped)


@dataclass
class FeatureBatch:
    """The clinical vectors of the patients of a batch that have clinical data.

    Attributes
    ----------
    x
        ``[G, F]`` the encoded clinical variables (imputed and scaled on the training fold).
    patient_index
        ``[G]`` long: the row of each vector's patient in the batch.
    """

    x: Tensor
    patient_index: Tensor

    def to(self, device) -> FeatureBatch:
        return FeatureBatch(self.x.to(device), self.patient_index.to(device))


@dataclass
class PatientBatch:
    """A batch of patients: graphs per modality (a :class:`FeatureBatch` for ``clinical``)
    plus the survival outcome."""

    patient_id: list[str]
    modalities: dict[str, ModalityBatch | FeatureBatch]
    time: Tensor
    event: Tensor

    def __len__(self) -> int:
        return len(self.patient_id)

    def to(self, device) -> PatientBatch:
        return PatientBatch(
            self.patient_id,
            {m: mb.to(device) for m, mb in self.modalities.items()},
            self.time.to(device),
            self.event.to(device),
        )


@dataclass
class ModelOutput:
    """What :class:`MultimodalSurvivalModel` returns.

    Attributes
    ----------
    risk
        ``[B]`` risk score (higher = earlier event; the logit of an event before the
        horizon for the binary head).
    embedding
        ``[B, E]`` the patient vectors fed to the head (the exported embeddings).
    logits
        ``[B, K]`` hazard logits of the discrete-time head, else None.
    aux_loss
        Weighted auxiliary loss of the aggregators (SPARRA's variational term).
    losses
        Unweighted auxiliary terms, ``"<modality>/<name>"``.
    node_weight
        Per modality, ``[N_m]`` the weight of every *input* node of ``modalities[m].graphs``
        (0 for nodes dropped by top-k pooling).
    present
        ``[B, M]`` bool, which patient has which modality.
    node_contribution
        Per modality, ``[N_m]`` the signed share of each input node in its patient's risk
        (evaluation mode, Cox head; see :meth:`MultimodalSurvivalModel.linear_head`): the
        risk of patient ``b`` is the sum of its nodes' contributions over the modalities
        plus ``risk_offset[b]``.
    node_posterior
        SPARRA only: per modality, the mean and standard deviation of the spatial
        importance :math:`s` of each input node that survived pooling (NaN elsewhere).
    risk_offset
        ``[B]`` the part of each risk that no node carries (the head's constant, the
        learned vectors of missing modalities, the clinical branch, the fusion's
        projection constants and the presence columns).
    fusion_weight
        ``[B, M]`` the weight of each modality in each patient's vector (``concat``: 1;
        ``mean``: 1 / the modalities present; ``attention``: the softmax over modalities).
    unimodal
        Training with ``unimodal_heads`` only: per modality, ``(output, patient_index)``
        of that modality's own head on its vector alone (:meth:`MultimodalSurvivalModel.
        unimodal_loss`).
    """

    risk: Tensor
    embedding: Tensor
    logits: Tensor | None
    aux_loss: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    node_weight: dict[str, Tensor] = field(default_factory=dict)
    present: Tensor | None = None
    node_contribution: dict[str, Tensor] = field(default_factory=dict)
    node_posterior: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)
    risk_offset: Tensor | None = None
    fusion_weight: Tensor | None = None
    unimodal: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


def _per_modality(value, modality: str, default):
    if isinstance(value, Mapping):
        return value.get(modality, default)
    return default if value is None else value


def reduced_width(width: int, components: int | str | None) -> int:
    """How many input components the encoder of a ``width``-wide modality reads (see
    ``input_components`` of :class:`MultimodalSurvivalModel`)."""
    if components is None:
        return width
    if components == "auto":
        components = max(16, width // 4)
    return min(int(components), max(1, width // 2))


class MultimodalSurvivalModel(nn.Module):
    r"""Graph encoders and aggregators per modality, fused, then a linear head.

    Args:
        in_channels: input feature width per modality, e.g. ``{"wsi": 1024, "ct": 768}``;
            ``"clinical"``: the width of the encoded clinical vector (an MLP branch).
        aggregator: ``"mean"``, ``"abmil"`` or ``"sparra"``.
        hidden_channels: hidden width :math:`n_h` of every branch.
        ratio: top-k ratio, one number or one per modality.
        conv: ``"gcn"`` or ``"gin"``, one or one per modality.
        use_graph: False skips convolution and pooling (plain MIL over the nodes).
        dropout: dropout after the input projection and before the head (paper: 0.5).
        aggregator_options: keyword options of the aggregator (see
            :mod:`radiopath.models.aggregators`).
        head: ``"cox"`` (one linear output, the log relative hazard; Eq. 7),
            ``"discrete"`` (``n_bins`` hazard logits, Patch-GCN / PORPOISE style) or
            ``"binary"`` (the logit of an event by a fixed horizon, MMDLM's 5-year head;
            :meth:`set_horizon`).
        n_bins: intervals of the discrete-time head.
        fusion: ``"concat"``, ``"mean"`` or ``"attention"``
            (:class:`~radiopath.models.fusion.ModalityFusion`).
        fusion_hidden: the common width of ``mean`` / ``attention`` fusion (default
            ``hidden_channels``).
        clinical_hidden: the layer widths of the clinical MLP.
        clinical_dropout: its dropout.
        unimodal_heads: give every modality its own head on its vector alone, trained
            beside the fused head (:meth:`unimodal_loss`; deep supervision), so that each
            branch must learn to predict by itself instead of leaning on the modality that
            fits first. The heads are not used for prediction.
        missing_indicator: append a presence column per modality to the patient vector.
        embedding_norm: batch-normalise the patient vector before the head (the exported
            embedding is the vector before normalisation).
        input_components: project each modality's standardised input features on this
            many components, at most half its width, or with ``"auto"`` on a quarter of
            its width, at least 16 (:meth:`set_input_components`, e.g. whitened principal
            components fitted on the training fold), before the encoder; ``None`` keeps
            every input feature. Whitening every direction of a narrow embedding would
            amplify its noise directions as much as its signal.
        encoder_options: further keyword options of every
            :class:`~radiopath.models.encoders.GraphEncoder` (top-k ``nonlinearity``,
            ``multiplier``, ``dropout_position``; ``importance``, how node weights are
            traced back to the input nodes).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        aggregator: str = "sparra",
        *,
        hidden_channels: int = 128,
        ratio: float | Mapping[str, float] = 0.2,
        conv: str | Mapping[str, str] = "gcn",
        use_graph: bool = True,
        dropout: float = 0.5,
        aggregator_options: Mapping | None = None,
        head: str = "cox",
        n_bins: int = 4,
        missing_indicator: bool = False,
        embedding_norm: bool = True,
        encoder_options: Mapping | None = None,
        input_components: int | str | None = None,
        fusion: str = "concat",
        fusion_hidden: int | None = None,
        clinical_hidden: tuple[int, ...] = (256, 128, 64),
        clinical_dropout: float = 0.3,
        unimodal_heads: bool = False,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if not in_channels:
            raise ValueError("need at least one modality")
        self.modalities = list(in_channels)
        self.graph_modalities = [m for m in self.modalities if m != CLINICAL]
        self.aggregator_name = aggregator
        self.hidden_channels = hidden_channels
        self.head_kind = head
        self.missing_indicator = missing_indicator
        options = dict(aggregator_options or {})
        self.encoders = nn.ModuleDict()
        self.aggregators = nn.ModuleDict()
        self.missing = nn.ParameterDict()
        self.input_components = input_components
        widths = {}
        for m, width in in_channels.items():
            if m == CLINICAL:
                self.clinical = ClinicalBranch(width, clinical_hidden, clinical_dropout)
                widths[m] = self.clinical.out_channels
            else:
                encoder = GraphEncoder(
                    reduced_width(width, input_components),
                    hidden_channels,
                    ratio=float(_per_modality(ratio, m, 0.2)),
                    conv=str(_per_modality(conv, m, "gcn")),
                    dropout=dropout,
                    use_graph=use_graph,
                    **dict(encoder_options or {}),
                )
                self._add_graph_branch(m, width, encoder, aggregator, options)
                widths[m] = hidden_channels
            self.missing[m] = nn.Parameter(torch.empty(widths[m]))
        self.fusion = ModalityFusion(
            [widths[m] for m in self.modalities], fusion, fusion_hidden or hidden_channels
        )
        self.embedding_dim = self.fusion.out_channels + (
            len(self.modalities) if missing_indicator else 0
        )
        # Batch normalisation of the patient vector: at inference an affine map, so the risk
        # stays a linear function of the patient vector (Eq. 7); in training it puts the
        # head's input on a unit scale, which Adam at lr 3e-4 needs to move the risk within
        # a few hundred steps (pooled vectors vary by a few hundredths between patients).
        self.embedding_norm = (
            nn.BatchNorm1d(self.embedding_dim) if embedding_norm else nn.Identity()
        )
        self.head_dropout = nn.Dropout(dropout)
        self._add_heads(head, n_bins, widths if unimodal_heads else {})
        self.reset_parameters()

    def _add_heads(self, head: str, n_bins: int, unimodal_widths: Mapping[str, int]) -> None:
        """The head on the patient vector, the auxiliary head of each modality in
        ``unimodal_widths`` (batch normalisation, then a linear map) and the heads' buffers."""
        out_dim = n_bins if head == "discrete" else 1
        self.unimodal = nn.ModuleDict(
            {
                m: nn.Sequential(nn.BatchNorm1d(w), nn.Linear(w, out_dim, bias=head != "cox"))
                for m, w in unimodal_widths.items()
            }
        )
        # The Cox partial likelihood is invariant to a shift of the risk, so a bias would
        # never be trained: the Cox head has none.
        self.head = nn.Linear(self.embedding_dim, out_dim, bias=head != "cox")
        self.register_buffer("bin_edges", torch.zeros(n_bins + 1))
        # the binary head's horizon and the weight of its positive class
        self.register_buffer("horizon", torch.tensor(float("nan")))
        self.register_buffer("pos_weight", torch.tensor(1.0))

    def _add_graph_branch(self, m: str, width: int, encoder: GraphEncoder, aggregator, options):
        """Modality ``m``'s encoder, aggregator and input-map buffers (standardisation and,
        with input components, the projection)."""
        reduced = reduced_width(width, self.input_components)
        self.encoders[m] = encoder
        self.aggregators[m] = make_aggregator(aggregator, self.hidden_channels, reduced, **options)
        self.register_buffer(f"feature_mean_{m}", torch.zeros(width))
        self.register_buffer(f"feature_std_{m}", torch.ones(width))
        if self.input_components is not None:
            self.register_buffer(f"feature_components_{m}", torch.eye(width, reduced))

    def reset_parameters(self) -> None:
        for m in self.modalities:
            nn.init.normal_(self.missing[m], std=0.1)
        if isinstance(self.embedding_norm, nn.BatchNorm1d):
            self.embedding_norm.reset_parameters()
        self.head.reset_parameters()
        for block in self.unimodal.values():
            for layer in block:
                layer.reset_parameters()

    def set_training_progress(self, progress: float) -> None:
        """How far training has got (0 to 1), for schedules inside the encoders
        (:attr:`GraphEncoder.ratio_warmup`)."""
        for encoder in self.encoders.values():
            encoder.progress = float(progress)

    def set_horizon(self, horizon: float, pos_weight: float = 1.0) -> None:
        """The binary head's horizon (in the cohort's time unit) and the loss weight of the
        patients with an event by then (``n_negative / n_positive`` of the training fold
        balances the classes)."""
        self.horizon.fill_(float(horizon))
        self.pos_weight.fill_(float(pos_weight))

    def set_feature_scaling(self, modality: str, mean: Tensor, std: Tensor) -> None:
        """Standardise ``modality``'s input features as ``(x - mean) / std`` (training-set
        statistics); SPARRA's decoder then reconstructs standardised features."""
        getattr(self, f"feature_mean_{modality}").copy_(mean)
        getattr(self, f"feature_std_{modality}").copy_(std)

    def set_input_components(self, modality: str, components: Tensor) -> None:
        """Project ``modality``'s standardised input features on ``components`` ``[D, K]``
        (the model must have been built with ``input_components=K``); SPARRA's decoder then
        reconstructs the projected features."""
        buffer = getattr(self, f"feature_components_{modality}", None)
        if buffer is None or buffer.shape != components.shape:
            expected = None if buffer is None else tuple(buffer.shape)
            raise ValueError(
                f"{modality}: components of shape {tuple(components.shape)} do not fit this "
                f"model (expected {expected}; build it with input_components=K)"
            )
        buffer.copy_(components)

    def input_map(self, modality: str) -> tuple[Tensor, ...]:
        """``(mean, std[, components])``: how ``modality``'s raw input features are mapped
        before the encoder (see :class:`~radiopath.models.encoders.GraphEncoder`)."""
        scale = (
            getattr(self, f"feature_mean_{modality}"),
            getattr(self, f"feature_std_{modality}"),
        )
        if self.input_components is None:
            return scale
        return (*scale, getattr(self, f"feature_components_{modality}"))

    @torch.no_grad()
    def map_input(self, modality: str, x: Tensor, node_weight: Tensor | None = None) -> Tensor:
        """One graph's node features as ``modality``'s encoder reads them: the input map
        (:meth:`input_map`), then, when the encoder centres, minus the graph's mean mapped
        vector (weighted by ``node_weight``, e.g. the patches behind each node).

        The training loop maps each graph once per fold and feeds the result as a
        ``mapped`` :class:`ModalityBatch`: the map is fixed during training, and with input
        components the mapped features are narrower than the raw ones, so the encoder's
        first product and its gradient shrink by the same factor. The same network reads
        raw or mapped features alike (equal up to float rounding).
        """
        from radiopath.models.encoders import _apply_input_map, graph_location

        z = _apply_input_map(x.float(), self.input_map(modality))
        kind = self.encoders[modality].center
        if kind:
            one_graph = torch.zeros(len(z), dtype=torch.long, device=z.device)
            z = z - graph_location(z, one_graph, 1, node_weight, kind)
        return z

    def linear_head(self) -> tuple[Tensor, Tensor]:
        r"""The Cox or binary head in evaluation mode as one affine map of the patient
        vector: ``risk = embedding @ coef + bias``, with the batch normalisation's running
        statistics folded in (:math:`c_j = w_j\gamma_j/\sqrt{\sigma^2_j + \epsilon}`)."""
        if self.head_kind == "discrete":
            raise ValueError("the discrete-time head is not linear in the patient vector")
        w = self.head.weight[0]
        bias = self.head.bias[0] if self.head.bias is not None else w.new_zeros(())
        norm = self.embedding_norm
        if isinstance(norm, nn.BatchNorm1d):
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            shift = norm.bias - norm.running_mean * scale
            return w * scale, bias + (w * shift).sum()
        return w, bias

    def encode_modality(
        self, modality: str, batch: ModalityBatch, node_weights: bool = True
    ) -> tuple[AggregationOutput, Tensor | None]:
        """One branch: ``(aggregator output, weights of every input node)`` (``None``
        without ``node_weights``: then no trace for receptive-field maps is recorded)."""
        agg, weight, _ = self._encode(modality, batch, node_weights)
        return agg, weight

    def _encode(self, modality: str, batch: ModalityBatch, node_weights: bool):
        g = batch.graphs
        num_graphs = int(batch.patient_index.numel())
        encoder = self.encoders[modality]
        enc = encoder(
            g.x,
            g.edge_index,
            g.batch,
            num_graphs,
            scale=None if batch.mapped else self.input_map(modality),
            trace=None if node_weights else False,
            node_weight=getattr(g, "patch_count", None),
            center=False if batch.mapped else None,
        )
        agg = self.aggregators[modality](enc.x, enc.batch, dim_size=num_graphs, target=enc.target)
        if not node_weights:
            return agg, None, enc
        return agg, enc.input_node_weights(agg.weight, encoder.importance), enc

    def forward(self, batch: PatientBatch, node_weights: bool = True) -> ModelOutput:
        """Risks and patient vectors of ``batch``; ``node_weights=False`` skips tracing the
        weights back to the input nodes (``ModelOutput.node_weight`` stays empty)."""
        n = len(batch)
        device = self.head.weight.device
        vectors, present_cols = [], []
        aux = torch.zeros((), device=device)
        losses: dict[str, Tensor] = {}
        node_weight: dict[str, Tensor] = {}
        explained = {}
        result_unimodal: dict[str, tuple[Tensor, Tensor]] = {}
        for m in self.modalities:
            vec = self.missing[m].unsqueeze(0).expand(n, -1)
            present = torch.zeros(n, dtype=torch.bool, device=device)
            mb = batch.modalities.get(m)
            if mb is not None and mb.patient_index.numel() > 0:
                if m == CLINICAL:
                    out = self.clinical(mb.x.to(vec.dtype))
                else:
                    agg, weight, enc = self._encode(m, mb, node_weights)
                    explained[m] = (agg, enc, mb.patient_index)
                    out = agg.out
                    aux = aux + agg.aux_loss
                    losses.update({f"{m}/{k}": v for k, v in agg.losses.items()})
                    if weight is not None:
                        node_weight[m] = weight
                if m in self.unimodal and self.training and mb.patient_index.numel() > 1:
                    result_unimodal[m] = (self.unimodal[m](out), mb.patient_index)
                vec = vec.index_copy(0, mb.patient_index, out.to(vec.dtype))
                present = present.index_fill(0, mb.patient_index, True)
            vectors.append(vec)
            present_cols.append(present)
        present = torch.stack(present_cols, 1)
        fused, alpha = self.fusion(vectors, present)
        parts = [fused]
        if self.missing_indicator:
            parts.append(present.to(fused.dtype))
        embedding = torch.cat(parts, 1)
        out = self.head(self.head_dropout(self.embedding_norm(embedding)))
        if self.head_kind == "discrete":
            risk, logits = discrete_time_risk(out), out
        else:
            risk, logits = out.squeeze(-1), None
        result = ModelOutput(risk, embedding, logits, aux, losses, node_weight, present)
        result.fusion_weight = alpha
        result.unimodal = result_unimodal
        if node_weights and not self.training:
            self._explain(result, explained, vectors, batch)
        return result

    def _explain(self, result: ModelOutput, explained: dict, vectors, batch: PatientBatch) -> None:
        """Signed node contributions, the risk offset and SPARRA's posterior (evaluation).

        With the head's coefficients ``c`` on the fused vector, the fusion weights
        :math:`\alpha_{bm}` and modality ``m``'s projection ``(W_m, b_m)`` (identity for
        ``concat``), patient ``b``'s risk is
        :math:`\\sum_m \alpha_{bm} (W_m v_{bm} + b_m)^\top c + \text{bias}` (plus the presence
        columns), and a pooled vector :math:`v_{bm} = \\sum_i w_i x_i` is linear in its nodes:
        node ``i`` contributes :math:`\alpha_{bm} w_i\\, x_i^\top W_m^\top c`. The clinical
        branch, learned vectors of missing modalities and the constants go to the offset.
        """
        from radiopath.models.aggregators import SparraAggregation

        for m, (_agg, enc, _) in explained.items():
            if isinstance(self.aggregators[m], SparraAggregation):
                mu_s, var_s, _, _ = self.aggregators[m].posterior(enc.x)
                nan = torch.full((enc.num_input_nodes,), float("nan"), device=mu_s.device)
                result.node_posterior[m] = (
                    nan.index_copy(0, enc.node_map, mu_s.float()),
                    nan.index_copy(0, enc.node_map, var_s.float().sqrt()),
                )
        if self.head_kind == "discrete":
            return
        coef, bias = (t.float() for t in self.linear_head())
        alpha = result.fusion_weight.float()
        offset = result.risk.new_full((len(batch),), float(bias)).float()
        start = 0
        for i, m in enumerate(self.modalities):
            affine = self.fusion.linear_map(i, vectors[i].float())
            if affine is None:  # concat: this modality's slice of the coefficients
                width = vectors[i].size(1)
                c_m, const = coef[start : start + width], 0.0
                scale = torch.ones_like(offset)
                start += width
            else:
                weight, shift, scale = affine
                c_f = coef[: self.fusion.out_channels]
                c_m, const = weight.float().t() @ c_f, float(shift.float() @ c_f)
            # per patient: the fusion weight over the normalisation's scale
            factor = alpha[:, i] / scale
            offset = offset + factor * const
            if m in explained:
                agg, enc, patient_index = explained[m]
                rows = patient_index[enc.batch]
                part = factor[rows] * agg.weight.float() * (enc.x.float() @ c_m)
                result.node_contribution[m] = enc.input_node_weights(
                    part, self.encoders[m].importance
                )
            # vectors the nodes do not carry: the clinical branch, learned missing vectors
            carried = result.present[:, i] & (m != CLINICAL)
            offset = offset + torch.where(carried, 0.0, factor * (vectors[i].float() @ c_m))
        if self.missing_indicator:
            ind = coef[self.fusion.out_channels :]
            offset = offset + result.present.float() @ ind
        result.risk_offset = offset

    def survival_loss(
        self, output: ModelOutput, time: Tensor, event: Tensor, ties: str = "efron"
    ) -> Tensor:
        """Negative Cox partial log-likelihood, the discrete-time NLL, or the class-weighted
        cross-entropy of an event by the horizon (binary head), as the head asks."""
        out = output.logits if self.head_kind == "discrete" else output.risk
        return self._head_loss(out, time, event, ties)

    def unimodal_loss(
        self, output: ModelOutput, time: Tensor, event: Tensor, ties: str = "efron"
    ) -> Tensor:
        """The mean over modalities of each unimodal head's loss on the patients of the
        batch that have the modality (``unimodal_heads``; 0 when no head ran)."""
        losses = [
            self._head_loss(
                out if self.head_kind == "discrete" else out.squeeze(-1),
                time[rows],
                event[rows],
                ties,
            )
            for out, rows in output.unimodal.values()
        ]
        return torch.stack(losses).mean() if losses else output.aux_loss.new_zeros(())

    def _head_loss(self, out: Tensor, time: Tensor, event: Tensor, ties: str) -> Tensor:
        if self.head_kind == "cox":
            return cox_loss(out, time, event, ties=ties)
        if self.head_kind == "binary":
            return binary_horizon_loss(
                out, time, event, float(self.horizon), float(self.pos_weight)
            )
        bins = time_to_bin(time.to(self.bin_edges.dtype), self.bin_edges)
        return discrete_time_nll(out, bins, event)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(modalities={self.modalities}, "
            f"aggregator={self.aggregator_name!r}, hidden={self.hidden_channels}, "
            f"fusion={self.fusion.fusion!r}, head={self.head_kind!r})"
        )
