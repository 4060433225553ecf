"""Batched Cox partial likelihood in torch: the shared engine of the torch survival models.

Many Cox problems (inner folds x grid points x outer folds) are solved in one call. A problem
is a row of a ``[B, n, p]`` design tensor with a 0/1 sample weight (which patients belong to
it) and a 0/1 feature mask (padding when folds keep different numbers of features).

With samples sorted by decreasing time, the Breslow risk-set sums are cumulative sums read at
the end of each tie group:

.. math::

    S_0(t_i) = \\sum_{j: t_j \\ge t_i} e^{\\eta_j}, \\qquad
    S_1(t_i) = \\sum_{j: t_j \\ge t_i} e^{\\eta_j} x_j,

and the negative log partial likelihood (Breslow, 1974) is
:math:`-\\ell(\\beta) = -\\sum_i \\delta_i (\\eta_i - \\log S_0(t_i))`. Its Hessian needs no
``n x p x p`` risk-set tensor:

.. math::

    \\nabla^2 (-\\ell) = X^\\top \\mathrm{diag}(e^{\\eta} \\odot c) X
        - \\bar X^\\top \\mathrm{diag}(\\delta) \\bar X, \\qquad
    c_j = \\sum_{i: t_i \\le t_j} \\delta_i / S_0(t_i),

where row :math:`i` of :math:`\\bar X` is :math:`S_1(t_i) / S_0(t_i)`. Everything is
:math:`O(B n p^2)` and runs on CPU or CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from radiopath.runtime import intra_op_threads
from radiopath.runtime import resolve_device as _resolve_device

DTYPE = torch.float64


def as_tensor(x, device, dtype=DTYPE) -> torch.Tensor:
    """``x`` (array-like or tensor) as a contiguous tensor on ``device`` in ``dtype``."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64), device=device, dtype=dtype)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """:func:`radiopath.runtime.resolve_device` for double-precision work ("auto" never
    picks MPS, which has no float64)."""
    return _resolve_device(device, float64=True)


def torch_threads(n: int | None, device: torch.device | str = "cpu"):
    """:func:`radiopath.runtime.intra_op_threads` under the evaluation's config name."""
    return intra_op_threads(n, device, field="evaluation.num_threads")


def _batch_param(value, B: int, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        v = value.to(device=device, dtype=DTYPE).reshape(-1)
    else:
        v = as_tensor(np.atleast_1d(np.asarray(value, dtype=np.float64)), device)
    return v.expand(B).clone() if v.numel() == 1 else v


def _feature_mask(mask, B: int, p: int, device) -> torch.Tensor:
    if mask is None:
        return torch.ones(B, p, dtype=DTYPE, device=device)
    m = as_tensor(mask, device)
    return m.unsqueeze(0).expand(B, -1).clone() if m.dim() == 1 else m


def start_coefficients(init, X: torch.Tensor, kernel: bool, fmask: torch.Tensor) -> torch.Tensor:
    """Newton's starting point from given coefficients ``init`` (``[B, p]``).

    In feature space ``init`` itself (padded features at 0); in sample space (``kernel``,
    :math:`\\beta = X^\\top u`) the least-squares ``u`` of :math:`X^\\top u = \\beta`, exact
    for a ``beta`` that lies in the span of the samples, as every ridge solution does.
    """
    beta = as_tensor(init, X.device) * fmask
    if not kernel:
        return beta
    return torch.linalg.lstsq(X.transpose(1, 2), beta.unsqueeze(-1)).solution.squeeze(-1)


class CoxBatch:
    """A batch of Cox problems, sorted once by decreasing time.

    Parameters
    ----------
    X
        ``[B, n, p]`` design (or ``[n, p]``, shared by all problems).
    time, event
        ``[B, n]`` (or ``[n]``).
    weight
        ``[B, n]`` 0/1 sample membership; None = every sample in every problem.
    batch_size
        B, needed when every input is shared.
    """

    def __init__(
        self,
        X: torch.Tensor,
        time: torch.Tensor,
        event: torch.Tensor,
        weight: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> None:
        B = batch_size
        for t in (X if X.dim() == 3 else None, time if time.dim() == 2 else None, weight):
            if t is not None:
                B = t.shape[0]
        if B is None:
            B = 1
        if X.dim() == 2:
            X = X.unsqueeze(0).expand(B, -1, -1)
        if time.dim() == 1:
            time = time.unsqueeze(0).expand(B, -1)
        if event.dim() == 1:
            event = event.unsqueeze(0).expand(B, -1)
        self._sort_outcomes(time, event, weight)
        p = X.shape[-1]
        self.X = torch.gather(X, 1, self.order.unsqueeze(-1).expand(-1, -1, p))
        self.batch_size, self.n_samples, self.n_features = self.X.shape

    def _sort_outcomes(self, time, event, weight) -> None:
        """Samples by decreasing time: order, time, weight, event, tie groups, sizes."""
        if weight is None:
            weight = torch.ones(time.shape, dtype=DTYPE, device=time.device)
        order = torch.argsort(-time, dim=1, stable=True)
        self.order = order
        self.time = torch.gather(time, 1, order)
        self.weight = torch.gather(weight.to(DTYPE), 1, order)
        self.event = torch.gather(event.to(DTYPE), 1, order) * self.weight
        key = (-self.time).contiguous()
        # Tie groups: the risk set of sample i is every j with t_j >= t_i.
        self.end = torch.searchsorted(key, key, right=True) - 1
        self.start = torch.searchsorted(key, key, right=False)
        self.n = self.weight.sum(1)

    _PER_PROBLEM = ("order", "time", "weight", "event", "X", "end", "start", "n")

    def select(self, idx: torch.Tensor) -> CoxBatch:
        """The sub-batch of problems ``idx`` (already sorted; nothing is recomputed)."""
        sub = object.__new__(type(self))
        sub.__dict__.update(self.__dict__)
        for name in self._PER_PROBLEM:
            setattr(sub, name, getattr(self, name)[idx])
        sub.batch_size = int(idx.numel())
        return sub

    def nll_grad_from_eta(self, eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative log partial likelihood ``[B]`` and its gradient ``[B, p]`` at ``eta = X beta``.

        The gradient is :math:`-X^\\top (\\delta - e^{\\eta} \\odot c)`: one ``[B, n]``
        residual and one product, no ``[B, n, p]`` risk-set sums.
        """
        event = self.event
        w, shift = self._exp(eta)
        s0 = torch.gather(torch.cumsum(w, 1), 1, self.end)
        safe_s0 = torch.where(event > 0, s0, torch.ones_like(s0))
        nll = -(event * (eta - torch.log(safe_s0) - shift)).sum(1)
        v = event / safe_s0
        c = torch.gather(torch.flip(torch.cumsum(torch.flip(v, [1]), 1), [1]), 1, self.start)
        resid = event - w * c
        return nll, -self.xt_dot(resid)

    def nll_from_eta(self, eta: torch.Tensor) -> torch.Tensor:
        w, shift = self._exp(eta)
        s0 = torch.gather(torch.cumsum(w, 1), 1, self.end)
        log_s0 = torch.log(torch.where(self.event > 0, s0, torch.ones_like(s0))) + shift
        return -(self.event * (eta - log_s0)).sum(1)

    def linear_predictor(self, beta: torch.Tensor) -> torch.Tensor:
        """:math:`X\\beta`: ``[B, p]`` -> ``[B, n]``."""
        return torch.bmm(self.X, beta.unsqueeze(-1)).squeeze(-1)

    def xt_dot(self, r: torch.Tensor) -> torch.Tensor:
        """:math:`X^\\top r`: ``[B, n]`` -> ``[B, p]``."""
        return torch.bmm(self.X.transpose(1, 2), r.unsqueeze(-1)).squeeze(-1)

    def _exp(self, eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        active = self.weight > 0
        shift = eta.masked_fill(~active, -torch.inf).amax(1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        w = torch.where(active, torch.exp(eta - shift), torch.zeros_like(eta))
        return w, shift

    def neg_log_likelihood(self, beta: torch.Tensor) -> torch.Tensor:
        """``[B]`` Breslow negative log partial likelihood (not divided by n)."""
        eta = self.linear_predictor(beta)
        w, shift = self._exp(eta)
        s0 = torch.gather(torch.cumsum(w, 1), 1, self.end)
        log_s0 = torch.log(torch.where(self.event > 0, s0, torch.ones_like(s0))) + shift
        return -(self.event * (eta - log_s0)).sum(1)

    def derivatives(
        self, beta: torch.Tensor, hessian: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Negative log partial likelihood ``[B]``, its gradient ``[B, p]`` and Hessian ``[B, p, p]``."""
        X, event = self.X, self.event
        eta = self.linear_predictor(beta)
        w, shift = self._exp(eta)
        s0 = torch.gather(torch.cumsum(w, 1), 1, self.end)
        safe_s0 = torch.where(event > 0, s0, torch.ones_like(s0))
        nll = -(event * (eta - torch.log(safe_s0) - shift)).sum(1)
        v = event / safe_s0
        rev = torch.flip(torch.cumsum(torch.flip(v, [1]), 1), [1])
        c = torch.gather(rev, 1, self.start)
        if not hessian:
            # d(-l)/d eta_j = -delta_j + e^{eta_j} c_j: one [B, n] residual, one product
            resid = event - w * c
            return nll, -self.xt_dot(resid), None
        idx = self.end.unsqueeze(-1).expand(-1, -1, self.n_features)
        s1 = torch.gather(torch.cumsum(w.unsqueeze(-1) * X, 1), 1, idx)
        xbar = s1 / safe_s0.unsqueeze(-1)
        grad = -(event.unsqueeze(-1) * (X - xbar)).sum(1)
        a = (w * c).unsqueeze(-1)
        hess = torch.bmm(X.transpose(1, 2), a * X) - torch.bmm(
            xbar.transpose(1, 2), event.unsqueeze(-1) * xbar
        )
        return nll, grad, hess

    def curvature_bound(self, beta: torch.Tensor, n_power: int = 15) -> torch.Tensor:
        """``[B]`` largest eigenvalue of :math:`X^\\top \\mathrm{diag}(e^{\\eta} c) X`, an upper
        bound of the Hessian of :math:`-\\ell` at ``beta`` (the subtracted term is PSD), by
        power iteration."""
        eta = self.linear_predictor(beta)
        w, _ = self._exp(eta)
        s0 = torch.gather(torch.cumsum(w, 1), 1, self.end)
        safe_s0 = torch.where(self.event > 0, s0, torch.ones_like(s0))
        v = self.event / safe_s0
        c = torch.gather(torch.flip(torch.cumsum(torch.flip(v, [1]), 1), [1]), 1, self.start)
        a = w * c
        u = torch.ones(self.batch_size, self.n_features, dtype=DTYPE, device=a.device)
        lam = torch.zeros(self.batch_size, dtype=DTYPE, device=a.device)
        for _ in range(n_power):
            hu = self.xt_dot(a * self.linear_predictor(u))
            lam = hu.norm(dim=1)
            u = hu / lam.clamp_min(1e-300).unsqueeze(1)
        return lam * 1.05

    def null_deviance_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Saturated and null log-likelihood per sample as scikit-survival's coxnet defines them.

        Both are divided by n; the null model ignores ties (risk set = position in the
        decreasing-time order + 1), exactly as in ``coxnet.h``.
        """
        n = self.n
        active = self.weight > 0
        position = torch.cumsum(active.to(DTYPE), 1)
        loglik_null = -(self.event * torch.log(position.clamp_min(1.0) / n.unsqueeze(1))).sum(1) / n
        n_events = self.event.sum(1)
        loglik_sat = -n_events / n * torch.log(1.0 / n)
        return loglik_sat, loglik_null


class GroupedCoxBatch(CoxBatch):
    """Cox problems on shared designs, column-centred per problem, sorted once.

    Problem b is the rows of ``X[group[b]]`` with 0/1 sample weights ``weight[b]``, its
    columns centred on its own samples: :math:`\\tilde X_b = W_b (X_g - 1 \\mu_b^\\top)`.
    The inner folds and grid points of one outer fold share that fold's design, so the
    design is stored and multiplied once per fold (one matrix product for all its
    problems) instead of once per problem:
    :math:`\\tilde X_b \\beta = w_b \\odot (X_g\\beta - \\mu_b^\\top\\beta)` and
    :math:`\\tilde X_b^\\top r = X_g^\\top (w_b \\odot r) - \\mu_b \\sum_i w_{bi} r_i`.

    Parameters
    ----------
    X
        ``[G, n, p]`` designs.
    group
        ``[B]`` the design of each problem.
    time, event, weight
        ``[B, n]``; the problems of one design must have the same times (one sort order).
    """

    _PER_PROBLEM = ("order", "time", "weight", "event", "end", "start", "n", "group", "mean")

    def __init__(self, X, group, time, event, weight=None) -> None:
        self._sort_outcomes(time, event, weight)
        self.group = group
        designs = torch.unique(group)
        first = {int(g): int(torch.nonzero(group == g)[0, 0]) for g in designs}
        order = self.order[list(first.values())]
        if not torch.equal(self.order, order[torch.searchsorted(designs, group)]):
            raise ValueError("problems that share a design must share their times")
        p = X.shape[-1]
        self.X = torch.zeros(X.shape[0], X.shape[1], p, dtype=DTYPE, device=X.device)
        self.X[designs] = torch.gather(X[designs], 1, order.unsqueeze(-1).expand(-1, -1, p))
        self.batch_size, self.n_samples, self.n_features = group.shape[0], X.shape[1], p
        self._index_designs()
        self.mean = torch.zeros(self.batch_size, p, dtype=DTYPE, device=X.device)
        for g, idx in self.designs:
            self.mean[idx] = self.weight[idx] @ self.X[g] / self.n[idx].unsqueeze(1)

    def _index_designs(self) -> None:
        """``designs``: ``(design, problem indices)`` of every design this batch uses."""
        self.designs = [
            (g, torch.nonzero(self.group == g).squeeze(1))
            for g in torch.unique(self.group).tolist()
        ]

    def select(self, idx: torch.Tensor) -> GroupedCoxBatch:
        sub = super().select(idx)
        sub._index_designs()
        return sub

    def linear_predictor(self, beta: torch.Tensor) -> torch.Tensor:
        out = torch.empty(beta.shape[0], self.n_samples, dtype=DTYPE, device=beta.device)
        for g, idx in self.designs:
            out[idx] = beta[idx] @ self.X[g].T
        out -= (self.mean * beta).sum(1, keepdim=True)
        return out * self.weight

    def xt_dot(self, r: torch.Tensor) -> torch.Tensor:
        wr = r * self.weight
        out = torch.empty(r.shape[0], self.n_features, dtype=DTYPE, device=r.device)
        for g, idx in self.designs:
            out[idx] = wr[idx] @ self.X[g]
        return out - self.mean * wr.sum(1, keepdim=True)

    def derivatives(self, beta, hessian: bool = True):
        if hessian:
            raise NotImplementedError("GroupedCoxBatch computes gradients only")
        return super().derivatives(beta, hessian=False)
