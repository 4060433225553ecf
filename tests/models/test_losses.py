"""Survival losses against lifelines and independent loops, on whas500 (which has ties)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines import CoxPHFitter
from sksurv.datasets import load_whas500

from radiopath.models.losses import (
    cox_loss,
    cox_partial_log_likelihood,
    discrete_time_bins,
    discrete_time_nll,
    discrete_time_risk,
    time_to_bin,
)

COVARIATES = ["age", "bmi", "hr", "sysbp", "diasbp"]


@pytest.fixture(scope="module")
def whas500():
    X, y = load_whas500()
    df = X[COVARIATES].astype(float).copy()
    df["time"] = y["lenfol"]
    df["event"] = y["fstat"].astype(int)
    return df


def loop_log_likelihood(eta, time, event, ties):
    """Textbook partial likelihood, one distinct event time at a time (no vectorisation)."""
    ll = 0.0
    for t in np.unique(time[event == 1]):
        at_risk = time >= t
        dead = (time == t) & (event == 1)
        d = dead.sum()
        r = np.exp(eta[at_risk]).sum()
        s = np.exp(eta[dead]).sum()
        ll += eta[dead].sum()
        if ties == "breslow":
            ll -= d * np.log(r)
        else:
            ll -= sum(np.log(r - l_ / d * s) for l_ in range(d))
    return ll


def test_efron_matches_lifelines_on_whas500(whas500):
    assert whas500["time"].duplicated().any(), "whas500 must have tied times for this test"
    cph = CoxPHFitter().fit(whas500, duration_col="time", event_col="event")
    eta = whas500[COVARIATES].to_numpy() @ cph.params_[COVARIATES].to_numpy()
    ours = cox_partial_log_likelihood(
        torch.tensor(eta),
        torch.tensor(whas500["time"].to_numpy()),
        torch.tensor(whas500["event"].to_numpy()),
        ties="efron",
    )
    # The partial likelihood is invariant to shifting eta, so lifelines' centring is irrelevant.
    assert float(ours) == pytest.approx(cph.log_likelihood_, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_matches_independent_loop(whas500, ties):
    rng = np.random.default_rng(0)
    eta = rng.normal(size=len(whas500))
    time, event = whas500["time"].to_numpy(), whas500["event"].to_numpy()
    ours = cox_partial_log_likelihood(
        torch.tensor(eta), torch.tensor(time), torch.tensor(event), ties
    )
    assert float(ours) == pytest.approx(loop_log_likelihood(eta, time, event, ties), rel=1e-10)


def test_breslow_and_efron_differ_only_with_ties():
    eta = torch.tensor([0.3, -1.0, 2.0, 0.1, 0.5])
    event = torch.tensor([1, 1, 1, 0, 1])
    distinct = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    tied = torch.tensor([5.0, 3.0, 3.0, 2.0, 1.0])
    b, e = (cox_partial_log_likelihood(eta, distinct, event, t) for t in ("breslow", "efron"))
    assert torch.allclose(b, e)
    b, e = (cox_partial_log_likelihood(eta, tied, event, t) for t in ("breslow", "efron"))
    assert not torch.allclose(b, e)
    assert float(e) > float(b)  # Efron's risk sets are smaller


def test_no_events_gives_zero_and_finite_gradient():
    eta = torch.randn(6, requires_grad=True)
    loss = cox_loss(eta, torch.arange(6.0), torch.zeros(6))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.isfinite(eta.grad).all() and float(eta.grad.abs().sum()) == 0.0


def test_stable_for_large_risks():
    eta = torch.tensor([800.0, 790.0, -500.0, 10.0], requires_grad=True)
    time = torch.tensor([1.0, 1.0, 2.0, 3.0])
    event = torch.tensor([1, 1, 0, 1])
    for ties in ("breslow", "efron"):
        loss = cox_loss(eta, time, event, ties=ties)
        loss.backward()
        assert torch.isfinite(loss.detach()) and torch.isfinite(eta.grad).all()
    # Shift invariance holds at this scale too.
    a = cox_partial_log_likelihood(eta.detach(), time, event, "efron")
    b = cox_partial_log_likelihood(eta.detach() - 800.0, time, event, "efron")
    assert torch.allclose(a, b, atol=1e-3)


def test_cox_loss_is_mean_over_events(whas500):
    eta = torch.zeros(len(whas500), dtype=torch.float64)
    time = torch.tensor(whas500["time"].to_numpy())
    event = torch.tensor(whas500["event"].to_numpy())
    total = -cox_partial_log_likelihood(eta, time, event, "breslow")
    assert float(cox_loss(eta, time, event, "breslow")) == pytest.approx(
        float(total) / int(event.sum())
    )


def test_discrete_time_nll_against_direct_formula():
    torch.manual_seed(0)
    logits = torch.randn(7, 4)
    time = torch.tensor([0.5, 1.5, 2.5, 3.5, 0.2, 2.2, 9.0])
    event = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    edges = discrete_time_bins(time, event, n_bins=4)
    bins = time_to_bin(time.double(), edges)
    h = torch.sigmoid(logits.double())
    expected = []
    for i in range(7):
        y = int(bins[i])
        s_prev = torch.prod(1 - h[i, :y])
        if event[i]:
            expected.append(-torch.log(s_prev * h[i, y]))
        else:
            expected.append(-torch.log(s_prev * (1 - h[i, y])))
    assert float(discrete_time_nll(logits, bins, event)) == pytest.approx(
        float(torch.stack(expected).mean()), rel=1e-5
    )
    # Larger hazards -> higher risk.
    assert float(discrete_time_risk(torch.full((1, 4), 2.0))) > float(
        discrete_time_risk(torch.full((1, 4), -2.0))
    )
    assert pd.Series(bins.numpy()).between(0, 3).all()


def test_cox_loss_with_memory_sums_to_the_full_partial_likelihood():
    """With the memory holding the other patients' current risks, the batches' losses (times
    their event counts) add up to the full-data partial likelihood (no ties: Breslow = Efron),
    and only the batch's risks get a gradient."""
    from radiopath.models.losses import cox_loss_with_memory

    g = torch.Generator().manual_seed(0)
    n = 60
    risk = torch.randn(n, generator=g, dtype=torch.float64)
    time = torch.randperm(n, generator=g).double() + 1.0
    event = torch.rand(n, generator=g) < 0.6
    full = cox_loss(risk, time, event, reduction="sum")
    total = 0.0
    for batch in torch.randperm(n, generator=g).split(16):
        rest = torch.ones(n, dtype=torch.bool)
        rest[batch] = False
        r = risk[batch].clone().requires_grad_(True)
        memory = risk[rest].clone().requires_grad_(True)
        loss = cox_loss_with_memory(r, time[batch], event[batch], memory, time[rest])
        loss.backward()
        assert memory.grad is None or torch.all(memory.grad == 0)
        assert r.grad is not None and bool(r.grad.abs().sum() > 0)
        total += float(loss) * int(event[batch].sum())
    assert total == pytest.approx(float(full), rel=1e-10)
    # an empty memory is the plain batch loss
    empty = torch.zeros(0, dtype=torch.float64)
    assert float(cox_loss_with_memory(risk, time, event, empty, empty)) == pytest.approx(
        float(cox_loss(risk, time, event))
    )
