"""Batched torch solver of the fast survival SVM (ranking objective), B problems at once.

:func:`fit_survival_svm` minimises scikit-survival's ``FastSurvivalSVM`` objective
(``rank_ratio=1``, ``fit_intercept=False``); :func:`survival_ranks` breaks tied times as
scikit-survival does. The estimator wrapping it is in :mod:`.estimators`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils import check_random_state

from radiopath.evaluation._cox import (
    DTYPE,
    _batch_param,
    _feature_mask,
    as_tensor,
    resolve_device,
    start_coefficients,
)

__all__ = ["SurvivalSVMFit", "fit_survival_svm", "survival_ranks"]

# ----------------------------------------------------------------------------- survival SVM


def survival_ranks(time: np.ndarray, random_state=None) -> np.ndarray:
    """Unique ranks of ``time`` with ties broken uniformly at random.

    The same order as scikit-survival's ``BaseSurvivalSVM._argsort_and_resolve_ties`` for the
    same ``random_state``, so tied samples form the same pairs.
    """
    rs = check_random_state(random_state)
    time = np.asarray(time)
    order = np.argsort(time, kind="mergesort")
    i, n = 0, len(time)
    while i < n - 1:
        j = i + 1
        while j < n and time[order[i]] == time[order[j]]:
            j += 1
        if i + 1 != j:
            rs.shuffle(order[i:j])
        i = j
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return ranks


@dataclass
class SurvivalSVMFit:
    """Result of :func:`fit_survival_svm` for B problems."""

    coef: torch.Tensor  # [B, p]
    loss: torch.Tensor  # [B]
    converged: torch.Tensor  # [B]
    failed: torch.Tensor  # [B]
    n_iter: int


def fit_survival_svm(
    X,
    rank,
    event,
    alpha=1.0,
    *,
    sample_weight=None,
    feature_mask=None,
    max_iter: int = 100,
    tol: float = 1e-10,
    chunk: int | None = 32,
    init=None,
    device="auto",
) -> SurvivalSVMFit:
    r"""The ranking objective of ``FastSurvivalSVM`` (``rank_ratio=1``) for B problems.

    .. math::

        f(w) = \frac{1}{2}\lVert w\rVert^2 + \frac{\alpha}{2} \sum_{(i, j) \in P}
        \max\big(0, 1 - (w^\top x_j - w^\top x_i)\big)^2,

    with :math:`P = \{(i, j): \delta_i = 1, \mathrm{rank}_i < \mathrm{rank}_j\}` (Polsterl et
    al. 2015, ECML PKDD). The pair set is held as an ``[n, n]`` mask per problem, and the
    function -- piecewise quadratic and strongly convex -- is minimised by generalised Newton
    steps, :math:`H = I + \alpha X^\top L X` with L the Laplacian of the active pairs, with
    backtracking, until the gradient's infinity norm is below ``tol`` (relative to 1 + |f|).
    ``chunk`` solves that many problems at a time: their ``[chunk, n, n]`` pair tensors stay
    in the CPU's cache, where the whole batch's would not. ``init`` (``[B, p]``) starts
    Newton from given coefficients, e.g. the solution of a neighbouring ``alpha``.
    """
    device = resolve_device(device)
    X, rank, event, w = _broadcast_problems(X, rank, event, sample_weight, device)
    B, n, p = X.shape
    fmask = _feature_mask(feature_mask, B, p, device)
    alpha = _batch_param(alpha, B, device)
    if chunk is not None and B > chunk:
        return _fit_in_chunks(X, rank, event, alpha, w, fmask, max_iter, tol, chunk, init, device)
    X = X * fmask.unsqueeze(1)
    pairs = _comparable_pairs(rank, event, w)
    # with more features than samples, Newton runs in the n-dimensional span of the samples
    kernel = p > n
    K = torch.bmm(X, X.transpose(1, 2)) if kernel else None
    if init is None:
        coef = torch.zeros(B, n if kernel else p, dtype=DTYPE, device=device)
    else:
        coef = start_coefficients(init, X, kernel, fmask)

    loss = torch.zeros(B, dtype=DTYPE, device=device)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    failed = torch.zeros(B, dtype=torch.bool, device=device)
    todo = torch.arange(B, device=device)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        if todo.numel() == 0:
            break
        # only the problems still running are computed
        Xs, Ps, a, c = X[todo], pairs[todo], alpha[todo], coef[todo]
        Ks = K[todo] if kernel else None
        new, new_loss, f_old, done, bad, stalled = _svm_newton_step(
            c, Xs, Ks, Ps, a, fmask[todo], tol
        )
        running = ~done & ~bad
        coef[todo] = torch.where(running.unsqueeze(1), new, c)
        loss[todo] = torch.where(running, new_loss, f_old)
        converged[todo] = done | stalled
        failed[todo] = bad
        todo = todo[running & ~stalled]
    if kernel:
        coef = torch.bmm(X.transpose(1, 2), coef.unsqueeze(-1)).squeeze(-1) * fmask
    return SurvivalSVMFit(coef, loss, converged, failed, it)


def _broadcast_problems(X, rank, event, sample_weight, device):
    """``X [B, n, p]``, ``rank``, ``event`` and sample weights ``[B, n]`` from batched or
    shared inputs; B is read off the first batched one (1 if none is)."""
    X, event = as_tensor(X, device), as_tensor(event, device)
    rank = as_tensor(rank, device)
    B = None
    for t in (X if X.dim() == 3 else None, rank if rank.dim() == 2 else None, sample_weight):
        if t is not None:
            B = t.shape[0]
    B = B or 1
    if X.dim() == 2:
        X = X.unsqueeze(0).expand(B, -1, -1)
    if rank.dim() == 1:
        rank = rank.unsqueeze(0).expand(B, -1)
    if event.dim() == 1:
        event = event.unsqueeze(0).expand(B, -1)
    w = (
        torch.ones(B, X.shape[1], dtype=DTYPE, device=device)
        if sample_weight is None
        else as_tensor(sample_weight, device)
    )
    return X, rank, event, w


def _comparable_pairs(rank, event, w) -> torch.Tensor:
    """``[B, n, n]`` 0/1: (i, j) with i an event, ranked before j, both in the problem."""
    pairs = (
        (event * w).unsqueeze(2).bool()
        & w.unsqueeze(1).bool()
        & (rank.unsqueeze(2) < rank.unsqueeze(1))
    ).to(DTYPE)
    if bool((pairs.sum((1, 2)) == 0).any()):
        raise ValueError("Data has no comparable pairs, cannot fit model.")
    return pairs


def _fit_in_chunks(X, rank, event, alpha, w, fmask, max_iter, tol, chunk, init, device):
    """:func:`fit_survival_svm` on ``chunk`` problems at a time, the results concatenated."""
    B = X.shape[0]
    parts = [
        fit_survival_svm(
            X[s : s + chunk],
            rank[s : s + chunk],
            event[s : s + chunk],
            alpha[s : s + chunk],
            sample_weight=w[s : s + chunk],
            feature_mask=fmask[s : s + chunk],
            max_iter=max_iter,
            tol=tol,
            init=None if init is None else init[s : s + chunk],
            device=device,
        )
        for s in range(0, B, chunk)
    ]
    return SurvivalSVMFit(
        *(
            torch.cat([getattr(f, k) for f in parts])
            for k in ("coef", "loss", "converged", "failed")
        ),
        max(f.n_iter for f in parts),
    )


def _svm_objective(c, Xs, Ks, Ps, a):
    """The objective at ``c`` (feature space, or sample space with ``Ks``), the active
    pairs ``[B, n, n]`` and their hinge margins."""
    f = torch.bmm(Xs if Ks is None else Ks, c.unsqueeze(-1)).squeeze(-1)
    margin = 1.0 - f.unsqueeze(1) + f.unsqueeze(2)  # [B, i, j] = 1 - (f_j - f_i)
    act = Ps * (margin > 0)
    m = act * margin
    norm = (c * c).sum(1) if Ks is None else (c * f).sum(1)
    return 0.5 * norm + 0.5 * a * (m * margin).sum((1, 2)), act, m


def _svm_newton_step(c, Xs, Ks, Ps, a, fmask, tol: float):
    """One generalised Newton step with backtracking (Armijo) of the running problems.

    Returns ``(new coef, new loss, old loss, done, bad, stalled)``: ``done`` when the
    gradient's infinity norm is below ``tol`` (relative to 1 + |f|) before the step,
    ``bad`` when the Newton system is singular or not finite, ``stalled`` when
    backtracking found no decrease.
    """
    kernel = Ks is not None
    f_old, act, m = _svm_objective(c, Xs, Ks, Ps, a)
    z = m.sum(2) - m.sum(1)
    if kernel:
        q = c + a.unsqueeze(1) * z  # gradient = X^T q
        grad_norm = torch.bmm(Xs.transpose(1, 2), q.unsqueeze(-1)).squeeze(-1).abs().amax(1)
    else:
        q = (
            c + a.unsqueeze(1) * torch.bmm(Xs.transpose(1, 2), z.unsqueeze(-1)).squeeze(-1)
        ) * fmask
        grad_norm = q.abs().amax(1)
    done = grad_norm <= tol * (1 + f_old.abs())
    delta, info = torch.linalg.solve_ex(_svm_newton_system(Xs, Ks, act, a), q.unsqueeze(-1))
    delta = delta.squeeze(-1)
    bad = ~done & ((info != 0) | ~torch.isfinite(delta).all(1))
    slope = (
        (torch.bmm(Ks, delta.unsqueeze(-1)).squeeze(-1) * q).sum(1)
        if kernel
        else (q * delta).sum(1)
    )
    step = torch.ones_like(a)
    new = c - delta
    new_loss = _svm_objective(new, Xs, Ks, Ps, a)[0]
    running = ~done & ~bad
    for _ in range(40):
        worse = running & ~(new_loss <= f_old - 1e-4 * step * slope)
        if not bool(worse.any()):
            break
        step = torch.where(worse, step * 0.5, step)
        cand = c - step.unsqueeze(1) * delta
        new = torch.where(worse.unsqueeze(1), cand, new)
        new_loss = torch.where(worse, _svm_objective(cand, Xs, Ks, Ps, a)[0], new_loss)
    stalled = running & (new_loss >= f_old) & (step < 1e-10)
    return new, new_loss, f_old, done, bad, stalled


def _svm_newton_system(Xs, Ks, act, a) -> torch.Tensor:
    r""":math:`I + \alpha X^\top L X` (sample space: :math:`I + \alpha L K`), with L the
    Laplacian of the active pairs, :math:`L = \mathrm{diag}(deg) - S`, :math:`S = A + A^\top`."""
    sym = act + act.transpose(1, 2)
    deg = sym.sum(2).unsqueeze(-1)
    if Ks is not None:
        eye = torch.eye(Ks.shape[1], dtype=DTYPE, device=Ks.device)
        return eye + a.view(-1, 1, 1) * (deg * Ks - torch.bmm(sym, Ks))
    eye = torch.eye(Xs.shape[2], dtype=DTYPE, device=Xs.device)
    xtlx = torch.bmm((deg * Xs).transpose(1, 2), Xs) - torch.bmm(
        Xs.transpose(1, 2), torch.bmm(sym, Xs)
    )
    return eye + a.view(-1, 1, 1) * xtlx
