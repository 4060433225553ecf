"""Patient-level aggregators: mean pooling, gated-attention MIL and SPARRA.

All three follow :class:`torch_geometric.nn.aggr.Aggregation`: they take node vectors ``x``
``[N, H]`` and a graph index ``index`` ``[N]`` (or ``ptr``) with ``dim_size`` graphs, so a
whole batch of graphs is aggregated in one call. Unlike PyG's aggregations they return an
:class:`AggregationOutput`: the graph vectors *and* the per-node weights (the importance
map) and any auxiliary loss terms, so that interchanging aggregators never changes the
training loop. Aggregators are chosen by name through :data:`AGGREGATORS` /
:func:`make_aggregator`.
"""

from __future__ import annotations

import abc
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Gamma, Normal, kl_divergence
from torch_geometric.nn.aggr import Aggregation
from torch_geometric.utils import scatter, softmax

from radiopath.models.dropout import Dropout

KL_VARIANTS = ("paper", "reference")
RECONSTRUCTIONS = ("gaussian", "mse")


class AggregationOutput(NamedTuple):
    """Result of an aggregator.

    Attributes
    ----------
    out
        ``[B, H]`` one vector per graph.
    weight
        ``[N]`` the weight of each node in its graph's vector (sums to 1 per graph).
    aux_loss
        Scalar auxiliary loss, already weighted, to add to the survival loss (0 if none).
    losses
        The unweighted auxiliary terms by name (for logging); empty if none.
    """

    out: Tensor
    weight: Tensor
    aux_loss: Tensor
    losses: dict[str, Tensor]


class PatientAggregation(Aggregation, metaclass=abc.ABCMeta):
    """Base class: a weighted sum of node vectors, with the weights exposed.

    Sub-classes implement :meth:`node_weights` (and may add auxiliary losses by
    overriding :meth:`forward`).
    """

    @abc.abstractmethod
    def node_weights(self, x: Tensor, index: Tensor, dim_size: int) -> Tensor:
        """``[N]`` the weight of each node, summing to 1 within each graph."""

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
        target: Tensor | None = None,
    ) -> AggregationOutput:
        self.assert_two_dimensional_input(x, dim)
        index = _index_from(x, index, ptr)
        weight = self.node_weights(x, index, dim_size)
        out = self.reduce(x * weight.unsqueeze(-1), index, None, dim_size, dim, reduce="sum")
        return AggregationOutput(out, weight, x.new_zeros(()), {})


def _index_from(x: Tensor, index: Tensor | None, ptr: Tensor | None) -> Tensor:
    if index is not None:
        return index
    if ptr is not None:
        counts = ptr[1:] - ptr[:-1]
        return torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)
    return x.new_zeros(x.size(0), dtype=torch.long)


class MeanAggregation(PatientAggregation):
    r"""Mean pooling: :math:`\mathbf{r}_b = \frac{1}{|\mathcal{V}_b|}\sum_{i \in \mathcal{V}_b} \mathbf{x}_i`.

    The weights are uniform, :math:`1/|\mathcal{V}_b|` for every node of graph :math:`b`.
    """

    def node_weights(self, x: Tensor, index: Tensor, dim_size: int) -> Tensor:
        count = scatter(torch.ones_like(index, dtype=x.dtype), index, 0, dim_size, "sum")
        return 1.0 / count[index]


class GatedAttentionAggregation(PatientAggregation):
    r"""Gated attention multiple-instance pooling (ABMIL; Ilse, Tomczak & Welling, ICML 2018).

    .. math::
        a_i = \mathbf{w}^\top\big(\tanh(\mathbf{V}\mathbf{x}_i) \odot
              \sigma(\mathbf{U}\mathbf{x}_i)\big),\qquad
        \alpha_i = \operatorname{softmax}_{i \in \mathcal{V}_b}(a_i),\qquad
        \mathbf{r}_b = \sum_{i \in \mathcal{V}_b} \alpha_i \mathbf{x}_i

    The softmax runs within each graph (:func:`torch_geometric.utils.softmax`); the node
    weights are the attention :math:`\alpha_i`.

    Args:
        in_channels: node vector width :math:`H`.
        hidden_channels: width of :math:`\mathbf{V}` and :math:`\mathbf{U}`.
        dropout: dropout inside the attention branches.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 128, dropout: float = 0.25):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.attention_v = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.Tanh(), Dropout(dropout)
        )
        self.attention_u = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.Sigmoid(), Dropout(dropout)
        )
        self.attention_w = nn.Linear(hidden_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.attention_v[0].reset_parameters()
        self.attention_u[0].reset_parameters()
        self.attention_w.reset_parameters()

    def scores(self, x: Tensor) -> Tensor:
        """Unnormalised attention :math:`a_i`, ``[N]``."""
        return self.attention_w(self.attention_v(x) * self.attention_u(x)).squeeze(-1)

    def node_weights(self, x: Tensor, index: Tensor, dim_size: int) -> Tensor:
        return softmax(self.scores(x), index, num_nodes=x.size(0), dim=0)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, hidden={self.hidden_channels})"


# ----------------------------------------------------------------------------- SPARRA


def normal_gamma_posterior(
    mu_s: Tensor,
    var_s: Tensor,
    alpha0: float = 2.0,
    beta0: float = 1e-2,
    mu0: float = 0.0,
    lambda0: float = 1.0,
) -> tuple[Tensor, Tensor]:
    r"""The closed-form variational posterior of the precision, Gao et al. (2025) **Eq. (4)**.

    Minimising Eq. (3) over :math:`q(v \mid s) = \mathcal{G}(\alpha_v, \beta_v)` for a
    Normal-Gamma prior :math:`\mathcal{NG}(\mu_0, \lambda_0, \alpha_0, \beta_0)` and
    :math:`q(s \mid X) = \mathcal{N}(\mu_s, \sigma_s^2)` gives

    .. math::
        \alpha_v = 2\alpha_0 + 1,\qquad
        \beta_v = 2\beta_0 + \lambda_0(\mu_s - \mu_0)^2 + \lambda_0\sigma_s^2 .

    Parameters
    ----------
    mu_s, var_s
        ``[N]`` mean and variance :math:`\sigma_s^2` of :math:`q(s \mid X)` per node.

    Returns
    -------
    alpha_v, beta_v
        ``[N]`` shape and rate of :math:`q(v \mid s)`.
    """
    alpha_v = torch.full_like(mu_s, 2.0 * alpha0 + 1.0)
    beta_v = 2.0 * beta0 + lambda0 * (mu_s - mu0) ** 2 + lambda0 * var_s
    return alpha_v, beta_v


def expected_normal_kl(
    mu_s: Tensor,
    var_s: Tensor,
    alpha_v: Tensor,
    beta_v: Tensor,
    mu0: float = 0.0,
    lambda0: float = 1.0,
) -> Tensor:
    r"""The sparsity term of Eq. (5): :math:`\mathbb{E}_{q(v|s)}[\mathrm{KL}(q(s|X)\,\|\,p(s|v))]`.

    For :math:`q(s|X) = \mathcal{N}(\mu_s, \sigma_s^2)`,
    :math:`p(s|v) = \mathcal{N}(\mu_0, (\lambda_0 v)^{-1})` and
    :math:`q(v|s) = \mathcal{G}(\alpha_v, \beta_v)`, per node,

    .. math::
        \tfrac12\Big[\lambda_0\,\mathbb{E}[v]\big((\mu_s-\mu_0)^2 + \sigma_s^2\big)
        - \log\lambda_0 - \mathbb{E}[\log v] - \log\sigma_s^2 - 1\Big],

    with :math:`\mathbb{E}[v] = \alpha_v/\beta_v` (the mean of the
    :class:`torch.distributions.Gamma`) and
    :math:`\mathbb{E}[\log v] = \psi(\alpha_v) - \log\beta_v`.

    Returns
    -------
    Tensor
        ``[N]`` the expected KL of each node.
    """
    q_v = Gamma(alpha_v, beta_v)
    e_log_v = torch.digamma(alpha_v) - torch.log(beta_v)
    spread = (mu_s - mu0) ** 2 + var_s
    return 0.5 * (
        lambda0 * q_v.mean * spread - math.log(lambda0) - e_log_v - torch.log(var_s) - 1.0
    )


def reference_kl(
    mu_s: Tensor,
    var_s: Tensor,
    alpha_v: Tensor,
    beta_v: Tensor,
    mu0: float = 0.0,
    lambda0: float = 1.0,
) -> Tensor:
    r"""The KL surrogate of the method's reference code, per node:
    :math:`\tfrac12[\lambda_0\,\mathrm{sg}(\mathbb{E}[v])((\mu_s-\mu_0)^2+\sigma_s^2) - \log\sigma_s^2]`
    with :math:`\mathbb{E}[v] = \alpha_v/\beta_v` detached (``sg``: stop-gradient)."""
    e_v = (alpha_v / beta_v).detach()
    return 0.5 * (lambda0 * e_v * ((mu_s - mu0) ** 2 + var_s) - torch.log(var_s))


class SparraAggregation(PatientAggregation):
    r"""Sparsity-informed spatial aggregation (SPARRA; Gao, Gao, Machado & Crispin-Ortuzar,
    MICCAI 2025).

    A gated score network gives, for every pooled node, the mean and log-variance of the
    spatial importance :math:`s` (log-variance clamped to :math:`[-20, 20]`):
    :math:`q(s \mid X) = \mathcal{N}(\mu_s, \sigma_s^2)`. The precision posterior
    :math:`q(v \mid s) = \mathcal{G}(\alpha_v, \beta_v)` is then in closed form
    (Eq. 4, :func:`normal_gamma_posterior`), and the node weights are the normalised
    inverse expected precision within each graph,

    .. math::
        \hat v_i = \frac{\mathbb{E}[v_i]^{-1}}{\sum_{j \in \mathcal{V}_b} \mathbb{E}[v_j]^{-1}}
                 = \frac{\beta_{v,i}/\alpha_{v,i}}{\sum_{j \in \mathcal{V}_b}\beta_{v,j}/\alpha_{v,j}},
        \qquad \mathbf{r}_b = \sum_{i \in \mathcal{V}_b} \hat v_i\, \mathbf{x}_i .

    A node is important when its :math:`s` is far from the prior mean or uncertain; the
    Student-t marginal of the Normal-Gamma prior keeps most nodes near :math:`\mu_0`
    (sparsity). The auxiliary loss is ``variational_weight`` times

    * ``kl``: the expected KL of Eq. (5) (:func:`expected_normal_kl`, ``kl="paper"``) or the
      reference code's surrogate (:func:`reference_kl`, ``kl="reference"``), averaged over
      nodes; with ``gamma_kl=True`` the second term of Eq. (3),
      :math:`\mathrm{KL}(q(v|s)\,\|\,p(v))`, is added
      (:func:`torch.distributions.kl_divergence` of two Gammas);
    * ``reconstruction``: :math:`-\log p(X \mid s)` of Eq. (6), a Gaussian with precision
      :math:`\tau` around a decoder :math:`D(s)` of the surviving nodes' *input* features:
      :math:`\tfrac{\tau}{2}\lVert X_i - D(s_i)\rVert^2` averaged over nodes
      (``reconstruction="gaussian"``), or :math:`\tau` times the mean squared error
      (``"mse"``, the reference code). :math:`s` is drawn by reparameterisation while
      training and set to :math:`\mu_s` in evaluation.

    Args:
        in_channels: node vector width :math:`H`.
        reconstruct_channels: width of the input features to reconstruct (``None``: no decoder).
        hidden_channels: width of the gated score network (reference code: 256).
        dropout: dropout in the score network (reference code: 0.25).
        alpha0, beta0, mu0, lambda0: Normal-Gamma prior (paper: 2, 1e-2, 0, 1).
        tau: decoder noise precision (paper: 1e-3).
        variational_weight: weight of KL + reconstruction against the survival loss (0.1).
        kl: ``"paper"`` or ``"reference"``.
        gamma_kl: add :math:`\mathrm{KL}(q(v|s)\|p(v))`.
        reconstruction: ``"gaussian"`` or ``"mse"``.
        init_mu, init_logvar: initial bias of the score network's two outputs (``None``:
            PyTorch's default initialisation, so :math:`\mu_s \approx 0` and
            :math:`\sigma_s^2 \approx 1` for every node). The weight of a node grows with
            :math:`\mu_s^2 + \sigma_s^2`, whose gradient in :math:`\mu_s` vanishes at
            :math:`\mu_s = 0`: starting every node at :math:`\mu_s \approx` ``init_mu``
            :math:`\neq 0` with a small variance (``init_logvar`` < 0) lets the weights
            move apart from the first step.
        sharpness: exponent :math:`\gamma` of the weights,
            :math:`\hat v_i \propto (\mathbb{E}[v_i]^{-1})^{\gamma}` (1: the paper). With
            :math:`\gamma > 1` a given difference in :math:`\mu_s^2 + \sigma_s^2` between
            two nodes gives a larger ratio of their weights, so a model can concentrate on a
            small region without first learning large scores.
    """

    def __init__(
        self,
        in_channels: int,
        reconstruct_channels: int | None = None,
        hidden_channels: int = 256,
        dropout: float = 0.25,
        alpha0: float = 2.0,
        beta0: float = 1e-2,
        mu0: float = 0.0,
        lambda0: float = 1.0,
        tau: float = 1e-3,
        variational_weight: float = 0.1,
        kl: str = "paper",
        gamma_kl: bool = False,
        reconstruction: str = "gaussian",
        decoder_hidden: int = 64,
        init_mu: float | None = None,
        init_logvar: float | None = None,
        sharpness: float = 1.0,
    ) -> None:
        super().__init__()
        if kl not in KL_VARIANTS:
            raise ValueError(f"kl must be one of {KL_VARIANTS}, got {kl!r}")
        if reconstruction not in RECONSTRUCTIONS:
            raise ValueError(
                f"reconstruction must be one of {RECONSTRUCTIONS}, got {reconstruction!r}"
            )
        if alpha0 <= 0 or beta0 <= 0 or lambda0 <= 0 or tau <= 0:
            raise ValueError("alpha0, beta0, lambda0 and tau must be positive")
        self.in_channels = in_channels
        self.reconstruct_channels = reconstruct_channels
        self.alpha0, self.beta0, self.mu0, self.lambda0 = alpha0, beta0, mu0, lambda0
        self.tau = tau
        self.variational_weight = variational_weight
        self.kl = kl
        self.gamma_kl = gamma_kl
        self.reconstruction = reconstruction
        self.init_mu, self.init_logvar = init_mu, init_logvar
        if not sharpness > 0:
            raise ValueError(f"sharpness must be positive, got {sharpness}")
        self.sharpness = float(sharpness)
        self.score_a = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.Tanh(), Dropout(dropout)
        )
        self.score_b = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.Sigmoid(), Dropout(dropout)
        )
        self.score_c = nn.Linear(hidden_channels, 2)
        if reconstruct_channels is not None:
            self.decoder = nn.Sequential(
                nn.Linear(1, decoder_hidden),
                nn.ReLU(),
                nn.Linear(decoder_hidden, reconstruct_channels),
            )
        else:
            self.decoder = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.score_a[0].reset_parameters()
        self.score_b[0].reset_parameters()
        self.score_c.reset_parameters()
        with torch.no_grad():
            if self.init_mu is not None:
                self.score_c.bias[0].fill_(self.init_mu)
            if self.init_logvar is not None:
                self.score_c.bias[1].fill_(self.init_logvar)
        if self.decoder is not None:
            for module in self.decoder:
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def importance_distribution(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``mu_s`` and ``log sigma_s^2`` (clamped to [-20, 20]) of every node, ``[N]`` each."""
        out = self.score_c(self.score_a(x) * self.score_b(x)).float()
        return out[:, 0], out[:, 1].clamp(-20.0, 20.0)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``mu_s, var_s, alpha_v, beta_v`` of every node (Eq. 4)."""
        mu_s, logvar_s = self.importance_distribution(x)
        var_s = torch.exp(logvar_s)
        alpha_v, beta_v = normal_gamma_posterior(
            mu_s, var_s, self.alpha0, self.beta0, self.mu0, self.lambda0
        )
        return mu_s, var_s, alpha_v, beta_v

    def _normalised_inverse_precision(
        self, alpha_v: Tensor, beta_v: Tensor, index: Tensor, dim_size: int
    ) -> Tensor:
        if self.sharpness != 1.0:
            # (E[v]^-1)^gamma normalised per graph = a softmax of gamma log E[v]^-1
            # (stable for large gamma).
            logits = self.sharpness * (torch.log(beta_v) - torch.log(alpha_v))
            return softmax(logits, index, num_nodes=beta_v.size(0), dim=0)
        inv_precision = beta_v / alpha_v  # E[v]^-1, the mean of q(v|s) inverted
        total = scatter(inv_precision, index, 0, dim_size, reduce="sum")
        return inv_precision / total[index]

    def node_weights(self, x: Tensor, index: Tensor, dim_size: int) -> Tensor:
        _, _, alpha_v, beta_v = self.posterior(x)
        return self._normalised_inverse_precision(alpha_v, beta_v, index, dim_size)

    def forward(
        self,
        x: Tensor,
        index: Tensor | None = None,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
        dim: int = -2,
        target: Tensor | None = None,
    ) -> AggregationOutput:
        self.assert_two_dimensional_input(x, dim)
        index = _index_from(x, index, ptr)
        mu_s, var_s, alpha_v, beta_v = self.posterior(x)
        weight = self._normalised_inverse_precision(alpha_v, beta_v, index, dim_size)
        out = self.reduce(
            x * weight.to(x.dtype).unsqueeze(-1), index, None, dim_size, dim, reduce="sum"
        )

        if self.kl == "paper":
            kl = expected_normal_kl(mu_s, var_s, alpha_v, beta_v, self.mu0, self.lambda0)
        else:
            kl = reference_kl(mu_s, var_s, alpha_v, beta_v, self.mu0, self.lambda0)
        losses = {"kl": kl.mean()}
        if self.gamma_kl:
            prior_v = Gamma(
                torch.full_like(alpha_v, self.alpha0), torch.full_like(beta_v, self.beta0)
            )
            losses["gamma_kl"] = kl_divergence(Gamma(alpha_v, beta_v), prior_v).mean()
        if self.decoder is not None and target is not None:
            q_s = Normal(mu_s, var_s.sqrt())
            s = q_s.rsample() if self.training else q_s.mean
            recon = self.decoder(s.unsqueeze(-1).to(x.dtype)).float()
            sq = (target.float() - recon) ** 2
            if self.reconstruction == "gaussian":
                losses["reconstruction"] = 0.5 * self.tau * sq.sum(-1).mean()
            else:
                losses["reconstruction"] = self.tau * sq.mean()
        aux = self.variational_weight * sum(losses.values())
        return AggregationOutput(out, weight, aux, losses)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, alpha0={self.alpha0}, "
            f"beta0={self.beta0}, mu0={self.mu0}, lambda0={self.lambda0}, tau={self.tau}, "
            f"kl={self.kl!r})"
        )


AGGREGATORS: dict[str, type[PatientAggregation]] = {
    "mean": MeanAggregation,
    "abmil": GatedAttentionAggregation,
    "sparra": SparraAggregation,
}


def make_aggregator(
    name: str, in_channels: int, reconstruct_channels: int | None = None, **options
):
    """Build an aggregator by name (``"mean"``, ``"abmil"``, ``"sparra"``).

    ``options`` go to the class's constructor; ``reconstruct_channels`` is used by SPARRA only.
    """
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; expected one of {sorted(AGGREGATORS)}")
    if name == "mean":
        return MeanAggregation()
    if name == "abmil":
        return GatedAttentionAggregation(in_channels, **options)
    return SparraAggregation(in_channels, reconstruct_channels, **options)
