"""Prediction with a trained fold model: risks, patient vectors, node explanations and the
fusion's modality weights, in evaluation mode; and the C-index every stage reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sksurv.metrics import concordance_index_censored

from radiopath.models.multimodal import ModelOutput, MultimodalSurvivalModel
from radiopath.runtime import intra_op_threads
from radiopath.training.data import GraphStore, PatientRecord, collate


def c_index(time, event, risk) -> float:
    """Harrell's C-index (:func:`sksurv.metrics.concordance_index_censored`); NaN if undefined."""
    event = np.asarray(event).astype(bool)
    risk = np.asarray(risk, dtype=np.float64)
    if not event.any() or len(risk) < 2 or not np.isfinite(risk).all():
        return float("nan")
    try:
        return float(concordance_index_censored(event, np.asarray(time, dtype=np.float64), risk)[0])
    except ValueError:  # no comparable pair
        return float("nan")


def _batches(records: Sequence[PatientRecord], batch_size: int, generator: torch.Generator | None):
    order = (
        torch.randperm(len(records), generator=generator).tolist()
        if generator is not None
        else list(range(len(records)))
    )
    for start in range(0, len(order), batch_size):
        yield [records[i] for i in order[start : start + batch_size]]


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


@dataclass
class NodeExplanation:
    """One patient's graph of one modality, explained per input node.

    Attributes
    ----------
    columns
        ``importance`` (the aggregator's weight traced back to the input nodes),
        ``contribution`` (signed share of the risk; Cox head only) and, for SPARRA,
        ``s_mean`` / ``s_sd`` (posterior of the spatial importance; NaN for nodes dropped
        by pooling), each ``[n_nodes]``.
    risk_offset
        The part of the risk no node carries: ``risk = sum of every modality's
        contributions + risk_offset`` (None without a Cox head).
    """

    columns: dict
    risk_offset: float | None

    @property
    def importance(self) -> np.ndarray:
        return self.columns["importance"]


@torch.no_grad()
def predict(
    model: MultimodalSurvivalModel,
    records: Sequence[PatientRecord],
    store: GraphStore,
    device: torch.device,
    batch_size: int = 32,
    amp: bool = False,
    node_weights: bool = False,
    num_threads: int | None = 1,
    fusion_weights: bool = False,
):
    """Risks and embeddings of ``records`` (evaluation mode), optionally node weights and
    the fusion's modality weights.

    ``num_threads`` torch intra-op threads are used on the CPU (:func:`intra_op_threads`;
    ``None``: torch's default).

    Returns
    -------
    risk : ndarray [n]
    embedding : ndarray [n, E]
    weights : dict
        ``{(patient_id, modality): NodeExplanation}`` per input node: the aggregator's
        weight, the signed risk contribution and SPARRA's posterior of ``s`` (only when
        ``node_weights``).
    fusion : ndarray [n, M]
        With ``fusion_weights`` only, a fourth value: each modality's weight in each
        patient's vector (:attr:`ModelOutput.fusion_weight`).
    """
    with intra_op_threads(num_threads, device):
        out = _predict(model, records, store, device, batch_size, amp, node_weights)
    return out if fusion_weights else out[:3]


def _predict(model, records, store, device, batch_size, amp, node_weights):
    model.eval()
    risks, embeddings, weights, fusion = [], [], {}, []
    for chunk in _batches(records, batch_size, None):
        batch = collate(chunk, store, model.modalities).to(device)
        with _autocast(device, amp):
            out: ModelOutput = model(batch, node_weights=node_weights)
        risks.append(out.risk.float().cpu())
        embeddings.append(out.embedding.float().cpu())
        fusion.append(out.fusion_weight.float().cpu())
        if node_weights:
            offset = None if out.risk_offset is None else out.risk_offset.float().cpu().numpy()
            for m, w in out.node_weight.items():
                mb = batch.modalities[m]
                ptr = mb.graphs.ptr.cpu().numpy()
                columns = {"importance": w}
                if m in out.node_contribution:
                    columns["contribution"] = out.node_contribution[m]
                if m in out.node_posterior:
                    columns["s_mean"], columns["s_sd"] = out.node_posterior[m]
                columns = {k: v.float().cpu().numpy() for k, v in columns.items()}
                for g, row in enumerate(mb.patient_index.cpu().numpy()):
                    part = {k: v[ptr[g] : ptr[g + 1]] for k, v in columns.items()}
                    weights[(chunk[row].patient_id, m)] = NodeExplanation(
                        part, None if offset is None else float(offset[row])
                    )
    risk = torch.cat(risks).numpy().astype(np.float64)
    embedding = torch.cat(embeddings).numpy()
    return risk, embedding, weights, torch.cat(fusion).numpy()
