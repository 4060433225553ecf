"""SPARRA's posterior, KL and weights against independent computations; ABMIL and mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Gamma, Normal, kl_divergence

from radiopath.models import (
    GatedAttentionAggregation,
    MeanAggregation,
    SparraAggregation,
    expected_normal_kl,
    make_aggregator,
    normal_gamma_posterior,
    reference_kl,
)


def test_posterior_matches_eq4():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=50)
    var = rng.uniform(0.01, 3.0, size=50)
    a0, b0, m0, l0 = 3.0, 0.5, 0.2, 2.5
    alpha, beta = normal_gamma_posterior(torch.tensor(mu), torch.tensor(var), a0, b0, m0, l0)
    np.testing.assert_allclose(alpha.numpy(), np.full(50, 2 * a0 + 1))
    np.testing.assert_allclose(beta.numpy(), 2 * b0 + l0 * (mu - m0) ** 2 + l0 * var)


def test_posterior_defaults_are_the_papers():
    alpha, beta = normal_gamma_posterior(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    assert alpha.tolist() == [5.0, 5.0]  # 2 * 2 + 1
    np.testing.assert_allclose(beta.numpy(), [0.02 + 1.0, 0.02 + 2.0])


def test_expected_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.tensor([0.0, 0.7, -1.5, 2.0], dtype=torch.float64)
    var = torch.tensor([0.5, 1.2, 0.05, 2.0], dtype=torch.float64)
    m0, l0 = 0.3, 1.7
    alpha, beta = normal_gamma_posterior(mu, var, 2.0, 0.01, m0, l0)
    closed = expected_normal_kl(mu, var, alpha, beta, m0, l0)
    v = Gamma(alpha, beta).sample((200_000,))  # [S, N]
    prior = Normal(torch.full_like(v, m0), 1.0 / torch.sqrt(l0 * v))
    mc = kl_divergence(Normal(mu.expand_as(v), var.sqrt().expand_as(v)), prior).mean(0)
    np.testing.assert_allclose(closed.numpy(), mc.numpy(), rtol=1e-2, atol=1e-2)


def test_reference_kl_formula_and_stop_gradient():
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    var = torch.tensor([0.3, 2.0])
    alpha, beta = normal_gamma_posterior(mu, var)
    kl = reference_kl(mu, var, alpha, beta)
    e_v = (alpha / beta).detach()
    expected = 0.5 * (e_v * ((mu - 0.0) ** 2 + var) - torch.log(var))
    assert torch.allclose(kl, expected)
    kl.sum().backward()
    # E[v] is detached: d/dmu = E[v] * mu only.
    assert torch.allclose(mu.grad, e_v * mu.detach())


def test_sparra_weights_are_normalised_inverse_precision():
    torch.manual_seed(1)
    agg = SparraAggregation(6, reconstruct_channels=4).eval()
    x = torch.randn(9, 6)
    index = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    out = agg(x, index, dim_size=3, target=torch.randn(9, 4))
    mu, var, alpha, beta = agg.posterior(x)
    inv = (beta / alpha).detach().numpy()
    w = out.weight.detach().numpy()
    for g in range(3):
        sel = (index == g).numpy()
        np.testing.assert_allclose(w[sel], inv[sel] / inv[sel].sum(), rtol=1e-6)
        assert w[sel].sum() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(
            out.out[g].detach().numpy(),
            (w[sel, None] * x[sel].numpy()).sum(0),
            rtol=1e-5,
            atol=1e-6,
        )
    assert set(out.losses) == {"kl", "reconstruction"}
    losses = {k: float(v.detach()) for k, v in out.losses.items()}
    assert float(out.aux_loss.detach()) == pytest.approx(
        0.1 * (losses["kl"] + losses["reconstruction"]), rel=1e-6
    )


def test_sparra_reconstruction_is_gaussian_nll_with_precision_tau():
    torch.manual_seed(2)
    agg = SparraAggregation(5, reconstruct_channels=3, tau=0.5).eval()
    x, target = torch.randn(4, 5), torch.randn(4, 3)
    with torch.no_grad():
        out = agg(x, torch.zeros(4, dtype=torch.long), dim_size=1, target=target)
        mu, _ = agg.importance_distribution(x)
        recon = agg.decoder(mu.unsqueeze(-1))
    expected = 0.5 * 0.5 * ((target - recon) ** 2).sum(-1).mean()
    assert float(out.losses["reconstruction"]) == pytest.approx(float(expected), rel=1e-6)


def test_sparra_gamma_kl_option():
    torch.manual_seed(3)
    agg = SparraAggregation(4, gamma_kl=True, alpha0=2.0, beta0=0.01).eval()
    x = torch.randn(5, 4)
    with torch.no_grad():
        out = agg(x, torch.zeros(5, dtype=torch.long), dim_size=1)
        _, _, a, b = agg.posterior(x)
    # Independent closed form of KL(Gamma(a, b) || Gamma(a0, b0)).
    a0, b0 = 2.0, 0.01
    kl = (
        (a - a0) * torch.digamma(a)
        - torch.lgamma(a)
        + math.lgamma(a0)
        + a0 * (torch.log(b) - math.log(b0))
        + a * (b0 - b) / b
    )
    assert float(out.losses["gamma_kl"]) == pytest.approx(float(kl.mean()), rel=1e-5)


def test_log_variance_is_clamped():
    agg = SparraAggregation(3)
    with torch.no_grad():
        agg.score_c.bias.copy_(torch.tensor([0.0, 1e4]))
    _, logvar = agg.importance_distribution(torch.randn(4, 3))
    assert float(logvar.detach().max()) == 20.0


def test_abmil_attention_is_gated_softmax_per_graph():
    torch.manual_seed(4)
    agg = GatedAttentionAggregation(6, hidden_channels=5).eval()
    x = torch.randn(7, 6)
    index = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    out = agg(x, index, dim_size=2)
    a = agg.attention_w(
        torch.tanh(agg.attention_v[0](x)) * torch.sigmoid(agg.attention_u[0](x))
    ).squeeze(-1)
    for g in range(2):
        sel = index == g
        w = torch.softmax(a[sel], 0)
        assert torch.allclose(out.weight[sel], w, atol=1e-6)
        assert torch.allclose(out.out[g], (w[:, None] * x[sel]).sum(0), atol=1e-5)
    assert out.losses == {}


def test_mean_is_uniform():
    x = torch.randn(5, 3)
    index = torch.tensor([0, 0, 1, 1, 1])
    out = MeanAggregation()(x, index, dim_size=2)
    assert torch.allclose(out.weight, torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]))
    assert torch.allclose(out.out, torch.stack([x[:2].mean(0), x[2:].mean(0)]))


def test_ptr_and_index_agree():
    torch.manual_seed(5)
    x = torch.randn(6, 4)
    index = torch.tensor([0, 0, 1, 1, 1, 2])
    ptr = torch.tensor([0, 2, 5, 6])
    for name in ("mean", "abmil", "sparra"):
        agg = make_aggregator(name, 4).eval()
        a, b = agg(x, index, dim_size=3), agg(x, ptr=ptr)
        assert torch.allclose(a.out, b.out) and torch.allclose(a.weight, b.weight)


def test_unknown_aggregator_is_named():
    with pytest.raises(ValueError, match="unknown aggregator 'maxpool'"):
        make_aggregator("maxpool", 4)
