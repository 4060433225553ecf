"""Survival losses: the Cox partial likelihood and the discrete-time likelihood.

Both are vectorised over the batch. The Cox partial likelihood sorts the batch by time once
and gets every risk set's log-sum from one ``logcumsumexp``, instead of building the ``B x B``
risk-set matrix in a Python loop as the method's reference code does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import scatter

TIES = ("breslow", "efron")


def _segment_logsumexp(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """``log(sum(exp(values)))`` within each segment, stabilised by the segment maximum."""
    peak = scatter(values.detach(), index, 0, num_segments, reduce="max")
    total = scatter(torch.exp(values - peak[index]), index, 0, num_segments, reduce="sum")
    return peak + torch.log(total)


def cox_partial_log_likelihood(
    risk: Tensor, time: Tensor, event: Tensor, ties: str = "efron"
) -> Tensor:
    r"""The Cox partial log-likelihood of the risk scores ``risk`` (a sum over events).

    With :math:`t_{(1)} < \dots < t_{(K)}` the distinct event times, :math:`D_k` the events at
    :math:`t_{(k)}` (:math:`d_k = |D_k|`) and :math:`R_k = \{j : t_j \ge t_{(k)}\}` the risk set,

    .. math::
        \ell_{\text{Breslow}} = \sum_k \Big[\sum_{i \in D_k} \eta_i
            - d_k \log \sum_{j \in R_k} e^{\eta_j}\Big]

        \ell_{\text{Efron}} = \sum_k \Big[\sum_{i \in D_k} \eta_i
            - \sum_{l=0}^{d_k - 1} \log\Big(\sum_{j \in R_k} e^{\eta_j}
            - \tfrac{l}{d_k} \sum_{j \in D_k} e^{\eta_j}\Big)\Big]

    (Breslow 1974; Efron 1977). Without ties both equal Cox's (1972) partial likelihood.
    The risk-set sums come from a ``logcumsumexp`` over the batch sorted by decreasing time;
    Efron's correction is taken as :math:`\log R + \log(1 - c\,S/R)` with ``log1p``, so no
    sum of exponentials is ever formed outside log space.

    Parameters
    ----------
    risk
        ``[B]`` log relative hazards :math:`\eta` (higher = earlier event).
    time
        ``[B]`` follow-up times.
    event
        ``[B]`` 1 for an event, 0 for censoring (bool or numeric).
    ties
        ``"breslow"`` or ``"efron"``.

    Returns
    -------
    Tensor
        Scalar log-likelihood (0 when the batch has no event; it stays connected to ``risk``
        so that ``backward`` works).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    risk = risk.reshape(-1)
    if risk.dtype not in (torch.float32, torch.float64):
        risk = risk.float()  # half precision under autocast: the sums need float32
    time = time.reshape(-1).to(risk.device)
    event = event.reshape(-1).to(risk.device).bool()
    if risk.numel() != time.numel() or risk.numel() != event.numel():
        raise ValueError(
            f"risk, time and event must have the same length, got "
            f"{risk.numel()}, {time.numel()}, {event.numel()}"
        )
    if not bool(event.any()):
        return risk.sum() * 0.0

    order = torch.argsort(time, descending=True, stable=True)
    risk_s, time_s, event_s = risk[order], time[order], event[order]
    # Groups of equal time, in decreasing order; the risk set of a group is everyone up to
    # and including the group's last member.
    _, group, counts = torch.unique_consecutive(time_s, return_inverse=True, return_counts=True)
    n_groups = counts.numel()
    group_end = torch.cumsum(counts, 0) - 1
    log_risk_set = torch.logcumsumexp(risk_s, 0)[group_end]  # [n_groups]

    ev_risk = risk_s[event_s]
    ev_group = group[event_s]
    if ties == "breslow":
        return ev_risk.sum() - log_risk_set[ev_group].sum()

    d = scatter(torch.ones_like(ev_risk), ev_group, 0, n_groups, reduce="sum")
    # Rank l = 0..d-1 of each event within its tie group.
    first = torch.cumsum(d, 0) - d
    rank = torch.arange(ev_risk.numel(), device=risk.device, dtype=risk.dtype) - first[ev_group]
    log_tied = _segment_logsumexp(ev_risk, ev_group, n_groups)
    frac = rank / d[ev_group]
    log_r = log_risk_set[ev_group]
    correction = torch.log1p(-frac * torch.exp(log_tied[ev_group] - log_r))
    return ev_risk.sum() - (log_r + correction).sum()


def cox_loss(
    risk: Tensor, time: Tensor, event: Tensor, ties: str = "efron", reduction: str = "mean"
) -> Tensor:
    """Negative Cox partial log-likelihood, divided by the number of events.

    ``reduction="mean"`` divides by the number of events in the batch (so batches with
    different event counts weigh alike), ``"sum"`` does not. A batch without events gives 0.
    See :func:`cox_partial_log_likelihood`.
    """
    nll = -cox_partial_log_likelihood(risk, time, event, ties=ties)
    if reduction == "sum":
        return nll
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    n_events = event.reshape(-1).bool().sum().clamp(min=1)
    return nll / n_events.to(nll.dtype)


def cox_loss_with_memory(
    risk: Tensor,
    time: Tensor,
    event: Tensor,
    memory_risk: Tensor,
    memory_time: Tensor,
    ties: str = "efron",
) -> Tensor:
    r"""Cox loss of a batch whose risk sets also hold the rest of the training set.

    A mini-batch of :math:`B` patients gives each event a risk set of at most :math:`B`
    patients, so the gradient of the partial likelihood is a noisy estimate at small
    batches (with 16 patients and half of them censored, a batch holds about 60 comparable
    pairs out of the training set's thousands). Here each event of the batch is compared
    with *every* training patient still at risk: the batch's own risks (with gradient) and
    the most recent risks of the other patients (``memory_risk``, detached; a memory bank
    refreshed as patients are seen). Only the batch's events are terms of the likelihood
    (the other patients enter as members of risk sets), and the loss is divided by their
    number, as :func:`cox_loss` does. With an empty memory this is :func:`cox_loss`.

    Parameters
    ----------
    risk, time, event
        ``[B]`` the batch.
    memory_risk, memory_time
        ``[M]`` the other training patients' last risks and their follow-up times.
    """
    risk = risk.reshape(-1)
    if risk.dtype not in (torch.float32, torch.float64):
        risk = risk.float()
    memory_risk = memory_risk.reshape(-1).detach().to(device=risk.device, dtype=risk.dtype)
    all_risk = torch.cat([risk, memory_risk])
    all_time = torch.cat(
        [time.reshape(-1).to(risk.device), memory_time.reshape(-1).to(risk.device)]
    )
    all_event = torch.cat(
        [
            event.reshape(-1).to(risk.device).bool(),
            torch.zeros(memory_risk.numel(), dtype=torch.bool, device=risk.device),
        ]
    )
    return cox_loss(all_risk, all_time, all_event, ties=ties)


def discrete_time_bins(time, event, n_bins: int = 4):
    """Interval edges for the discrete-time model: quantiles of the *event* times.

    As in Patch-GCN and PORPOISE (Chen et al. 2021, 2022): the bins hold about the same
    number of uncensored patients; the outer edges are opened to 0 and infinity.

    Returns
    -------
    Tensor
        ``[n_bins + 1]`` increasing edges.
    """
    time = torch.as_tensor(time, dtype=torch.float64).reshape(-1)
    event = torch.as_tensor(event).reshape(-1).bool()
    source = time[event] if bool(event.any()) else time
    qs = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    edges = torch.quantile(source, qs)
    edges[0], edges[-1] = 0.0, float("inf")
    edges = torch.cummax(edges, 0).values
    return edges


def time_to_bin(time: Tensor, edges: Tensor) -> Tensor:
    """Index of the interval ``[edges[k], edges[k+1])`` holding each time."""
    inner = edges[1:-1].to(device=time.device, dtype=time.dtype)
    return torch.bucketize(time, inner, right=True)


def discrete_time_nll(
    logits: Tensor, time_bin: Tensor, event: Tensor, alpha: float = 0.0
) -> Tensor:
    r"""Negative log-likelihood of the discrete-time hazard model (Zadeh & Schmid 2020).

    With hazards :math:`h_k = \sigma(z_k)` and survival :math:`S_k = \prod_{j \le k}(1-h_j)`,
    a patient with an event in bin :math:`y` contributes :math:`-\log S_{y-1} - \log h_y`, a
    patient censored in bin :math:`y` contributes :math:`-\log S_y`. ``alpha`` up-weights
    the uncensored part as in Patch-GCN's ``NLLSurvLoss``:
    :math:`(1-\alpha)\,\mathcal{L} + \alpha\,\mathcal{L}_{\text{uncensored}}`.

    Parameters
    ----------
    logits
        ``[B, K]`` hazard logits.
    time_bin
        ``[B]`` long, the bin of each follow-up time.
    event
        ``[B]`` 1 = event, 0 = censored.
    """
    logits = logits.float()
    event = event.reshape(-1).to(logits.dtype)
    y = time_bin.reshape(-1, 1).long()
    log_h = F.logsigmoid(logits)
    log_1mh = F.logsigmoid(-logits)
    # log S_k, with S_{-1} = 1 padded in front.
    log_s = torch.cat([logits.new_zeros(logits.size(0), 1), torch.cumsum(log_1mh, 1)], 1)
    log_s_prev = log_s.gather(1, y).squeeze(1)
    log_s_here = log_s.gather(1, y + 1).squeeze(1)
    log_h_here = log_h.gather(1, y).squeeze(1)
    uncensored = -event * (log_s_prev + log_h_here)
    censored = -(1 - event) * log_s_here
    nll = censored + uncensored
    return ((1 - alpha) * nll + alpha * uncensored).mean()


def discrete_time_risk(logits: Tensor) -> Tensor:
    r"""A scalar risk from hazard logits: :math:`-\sum_k S_k` (minus the expected bin count)."""
    log_1mh = F.logsigmoid(-logits.float())
    return -torch.exp(torch.cumsum(log_1mh, 1)).sum(1)


def horizon_labels(time: Tensor, event: Tensor, horizon: float) -> tuple[Tensor, Tensor]:
    """``(label, usable)`` of a fixed-horizon binary endpoint: 1 for an event by the horizon,
    0 for a patient followed beyond it; a patient censored before the horizon is not usable
    (its status at the horizon is unknown)."""
    time = time.reshape(-1)
    event = event.reshape(-1).bool()
    positive = event & (time <= horizon)
    return positive, positive | (time > horizon)


def binary_horizon_loss(
    logit: Tensor, time: Tensor, event: Tensor, horizon: float, pos_weight: float = 1.0
) -> Tensor:
    """Class-weighted binary cross-entropy of an event by ``horizon`` (MMDLM's 5-year head),
    over the patients whose status at the horizon is known (:func:`horizon_labels`).

    Patients censored before the horizon are left out of the loss rather than counted as
    survivors. ``pos_weight`` multiplies the loss of the positives
    (:func:`torch.nn.functional.binary_cross_entropy_with_logits`); a batch without a usable
    patient gives a zero loss that still reaches every parameter of the graph.
    """
    label, usable = horizon_labels(time, event, horizon)
    logit = logit.float().reshape(-1)
    if not bool(usable.any()):
        return logit.sum() * 0.0
    weight = torch.tensor(float(pos_weight), device=logit.device)
    return F.binary_cross_entropy_with_logits(
        logit[usable], label[usable].float(), pos_weight=weight
    )
