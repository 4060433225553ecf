"""Several independently trained fold models read as one (``ensemble`` in training).

A graph encoder with top-k selection can settle on the wrong tissue in one modality from
one start and on the right one from another: the failures of the default recipe are single
(fold, modality) branches, not whole runs. Averaging models trained from different seeds
keeps a failed member's map and risk from standing alone.

:class:`EnsembleSurvivalModel` reads a batch with every member and returns one
:class:`~radiopath.models.multimodal.ModelOutput`:

* ``risk`` -- the mean of the members' risks, each standardised by its mean and standard
  deviation over the fold's training patients (members' risks share no scale);
* ``embedding`` -- the members' patient vectors side by side (they share no basis, so
  they are not averaged);
* ``node_weight`` -- the mean of the members' node weights, each first divided by its
  sum over its graph (every member's map weighs equally);
* ``node_contribution`` and ``risk_offset`` -- exact for the averaged risk:
  :math:`r = \\frac1K\\sum_k (r_k - \\mu_k)/\\sigma_k` with :math:`r_k = \\sum_i c_{ki} + o_k`
  gives contributions :math:`\\frac1K\\sum_k c_{ki}/\\sigma_k` and offset
  :math:`\\frac1K\\sum_k (o_k - \\mu_k)/\\sigma_k`;
* ``node_posterior`` -- SPARRA's posterior of ``s`` as the members' mixture: the mean of
  the members' means, and the standard deviation of the mixture (mean variance plus the
  variance of the means), over the members that kept the node (NaN if none did).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from radiopath.models.multimodal import ModelOutput, MultimodalSurvivalModel, PatientBatch


class EnsembleSurvivalModel(nn.Module):
    """Members of one fold read as one model (evaluation only; each member is trained on its
    own).

    Parameters
    ----------
    members
        The trained fold models, all reading the same modalities.
    risk_mean, risk_scale
        ``[K]`` each member's mean and standard deviation of the risk over the fold's
        training patients.
    """

    def __init__(
        self, members: Sequence[MultimodalSurvivalModel], risk_mean: Tensor, risk_scale: Tensor
    ) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        modalities = [tuple(m.modalities) for m in members]
        if len(set(modalities)) != 1:
            raise ValueError(f"members read different modalities: {modalities}")
        if not (len(risk_mean) == len(risk_scale) == len(members)):
            raise ValueError("one risk mean and scale per member")
        if not bool((torch.as_tensor(risk_scale) > 0).all()):
            raise ValueError("every member's risk scale must be positive")
        self.members = nn.ModuleList(members)
        self.register_buffer("risk_mean", torch.as_tensor(risk_mean, dtype=torch.float32))
        self.register_buffer("risk_scale", torch.as_tensor(risk_scale, dtype=torch.float32))
        self.modalities = list(members[0].modalities)
        self.graph_modalities = list(members[0].graph_modalities)
        self.head_kind = members[0].head_kind

    def forward(self, batch: PatientBatch, node_weights: bool = True) -> ModelOutput:
        if self.training:
            raise RuntimeError("an ensemble is read in evaluation mode; train its members")
        outs = [member(batch, node_weights=node_weights) for member in self.members]
        k = len(outs)
        scale = [float(s) for s in self.risk_scale]
        mean = [float(m) for m in self.risk_mean]
        risk = self.combine_risks([o.risk for o in outs])
        result = ModelOutput(
            risk=risk,
            embedding=torch.cat([o.embedding for o in outs], 1),
            logits=None,
            aux_loss=risk.new_zeros(()),
            present=outs[0].present,
            fusion_weight=torch.stack([o.fusion_weight.float() for o in outs]).mean(0),
        )
        if not node_weights:
            return result
        for m in outs[0].node_weight:
            graph_of = batch.modalities[m].graphs.batch
            result.node_weight[m] = (
                sum(_per_graph_share(o.node_weight[m].float(), graph_of) for o in outs) / k
            )
        for m in outs[0].node_contribution:
            result.node_contribution[m] = (
                sum(o.node_contribution[m].float() / sd for o, sd in zip(outs, scale)) / k
            )
        if outs[0].risk_offset is not None:
            result.risk_offset = (
                sum((o.risk_offset.float() - mu) / sd for o, mu, sd in zip(outs, mean, scale)) / k
            )
        for m in outs[0].node_posterior:
            result.node_posterior[m] = _mixture([o.node_posterior[m] for o in outs])
        return result

    def combine_risks(self, risks: Sequence[Tensor]) -> Tensor:
        """The ensemble's risk from its members' risks of the same patients (one tensor per
        member): the mean of the standardised risks, as :meth:`forward` computes it."""
        pairs = zip(risks, self.risk_mean.tolist(), self.risk_scale.tolist())
        return sum((r.float() - mu) / sd for r, mu, sd in pairs) / len(self.members)


def _per_graph_share(weight: Tensor, graph_of: Tensor) -> Tensor:
    """Each node's weight over its graph's total (a graph whose weights are all 0 stays 0)."""
    total = scatter(weight, graph_of, dim=0, reduce="sum")
    total = total[graph_of]
    return torch.where(total > 0, weight / total.clamp_min(1e-30), torch.zeros_like(weight))


def _mixture(posteriors: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of an equal-weight mixture of per-node normals, over the
    members whose value is not NaN (a node some members dropped)."""
    means = torch.stack([p[0] for p in posteriors])
    sds = torch.stack([p[1] for p in posteriors])
    kept = ~torch.isnan(means)
    n = kept.sum(0)
    safe_n = n.clamp_min(1)
    mu = torch.where(kept, means, 0.0).sum(0) / safe_n
    second = torch.where(kept, sds**2 + means**2, 0.0).sum(0) / safe_n
    sd = (second - mu**2).clamp_min(0.0).sqrt()
    nan = torch.full_like(mu, float("nan"))
    return torch.where(n > 0, mu, nan), torch.where(n > 0, sd, nan)
