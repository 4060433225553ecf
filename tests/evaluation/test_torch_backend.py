"""The batched pieces of the torch backend against their one-problem-at-a-time definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sksurv.metrics import concordance_index_censored

from radiopath.evaluation.torch_backend import _harrell_cv
from radiopath.evaluation.torch_cox import fit_cox_ridge, fit_coxnet_path
from radiopath.evaluation.torch_svm import fit_survival_svm


def _problems(seed=0, designs=3, per_design=4, n=40, p=6):
    """``designs`` designs, each shared by ``per_design`` problems with their own samples."""
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.normal(size=(designs, n, p)))
    time = torch.as_tensor(rng.exponential(size=(designs, n)).round(1) + 0.1)
    event = torch.as_tensor(rng.random((designs, n)) < 0.7)
    group = torch.arange(designs).repeat_interleave(per_design)
    member = torch.as_tensor(rng.random((len(group), n)) < 0.75)
    return X, time, event, group, member


def test_harrell_cv_is_harrells_c_on_each_subset():
    X, time, event, group, member = _problems()
    risk = torch.as_tensor(np.random.default_rng(1).normal(size=member.shape))
    risk[0, :5] = 0.25  # ties
    got = _harrell_cv(risk, time[group], event[group], member)
    for b in range(len(group)):
        m = member[b].numpy()
        want = concordance_index_censored(
            event[group[b]].numpy()[m], time[group[b]].numpy()[m], risk[b].numpy()[m]
        )[0]
        assert got[b].item() == np.float64(want)
    no_pair = torch.zeros_like(member)
    no_pair[:, 0] = True
    assert torch.isnan(_harrell_cv(risk, time[group], event[group], no_pair)).all()


def test_coxnet_on_shared_designs_is_coxnet_on_copies():
    """Grouped problems (one design per outer fold) solve exactly the copied problems."""
    X, time, event, group, member = _problems()
    alphas = torch.tensor([0.3, 0.1, 0.03], dtype=torch.float64).expand(len(group), -1)
    kw = dict(l1_ratio=0.5, alphas=alphas, sample_weight=member.double(), tol=1e-9, device="cpu")
    copied = fit_coxnet_path(X[group], time[group], event[group], **kw)
    shared = fit_coxnet_path(X, time[group], event[group], groups=group, **kw)
    torch.testing.assert_close(shared.coef, copied.coef, atol=1e-7, rtol=0)
    torch.testing.assert_close(shared.offset_mean, copied.offset_mean)
    torch.testing.assert_close(shared.deviance_ratio, copied.deviance_ratio)
    assert shared.coef.abs().sum() > 0


def test_survival_svm_in_chunks_is_the_whole_batch():
    X, time, event, group, member = _problems(p=5)
    ranks = torch.as_tensor(np.argsort(np.argsort(time.numpy(), 1), 1)).double()
    alpha = torch.linspace(0.01, 1.0, len(group), dtype=torch.float64)
    kw = dict(sample_weight=member.double(), max_iter=50, tol=1e-10, device="cpu")
    args = (X[group], ranks[group], event[group].double(), alpha)
    whole = fit_survival_svm(*args, chunk=None, **kw)
    chunked = fit_survival_svm(*args, chunk=5, **kw)
    torch.testing.assert_close(chunked.coef, whole.coef)
    assert bool(whole.converged.all())


@pytest.mark.parametrize("p", [5, 60])  # Newton in feature space, and in sample space
def test_survival_svm_warm_start_reaches_the_same_minimiser(p):
    X, time, event, group, member = _problems(p=p)
    ranks = torch.as_tensor(np.argsort(np.argsort(time.numpy(), 1), 1)).double()
    args = (X[group], ranks[group], event[group].double())
    kw = dict(sample_weight=member.double(), max_iter=50, tol=1e-10, device="cpu")
    neighbour = fit_survival_svm(*args, 0.25, **kw)
    cold = fit_survival_svm(*args, 1.0, **kw)
    warm = fit_survival_svm(*args, 1.0, init=neighbour.coef, **kw)
    torch.testing.assert_close(warm.coef, cold.coef)
    assert warm.n_iter < cold.n_iter


@pytest.mark.parametrize("p", [5, 60])  # Newton in feature space, and in sample space
def test_ridge_cox_warm_start_reaches_the_same_minimiser(p):
    X, time, event, group, member = _problems(p=p)
    args = (X[group], time[group], event[group])
    kw = dict(sample_weight=member.double(), n_iter=100, tol=1e-12, device="cpu")
    neighbour = fit_cox_ridge(*args, 10.0, **kw)
    cold = fit_cox_ridge(*args, 1.0, **kw)
    warm = fit_cox_ridge(*args, 1.0, init=neighbour.coef, **kw)
    torch.testing.assert_close(warm.coef, cold.coef, atol=1e-7, rtol=0)
    assert bool(warm.converged.all()) and warm.n_iter < cold.n_iter
