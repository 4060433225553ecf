"""Torch versions of scikit-survival's linear survival models, batched over many problems.

Three estimators with scikit-survival's ``fit`` / ``predict`` API, so they drop into a
``Pipeline`` or ``GridSearchCV``:

* :class:`TorchCoxPH` -- ``CoxPHSurvivalAnalysis`` (ridge penalty, Breslow ties),
* :class:`TorchCoxnet` -- ``CoxnetSurvivalAnalysis`` (elastic net along the alpha path),
* :class:`TorchFastSurvivalSVM` -- ``FastSurvivalSVM`` with the ranking objective
  (``rank_ratio=1``, ``fit_intercept=False``).

Each is a thin wrapper around a batched solver (:func:`fit_cox_ridge`, :func:`fit_coxnet_path`,
:func:`fit_survival_svm`) that solves B problems at once -- inner cross-validation folds x
grid points x outer folds -- on CPU or CUDA. The solvers minimise exactly scikit-survival's
objectives, so the solutions agree to solver tolerance (tests check 1e-4 relative).

A solver that overflows or meets a singular system marks that problem as failed (the
estimators raise :class:`ArithmeticError`, as scikit-survival's coxnet does for "weights too
large") rather than returning garbage.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted
from sksurv.base import SurvivalAnalysisMixin
from sksurv.linear_model.coxph import BreslowEstimator
from sksurv.util import check_array_survival

from radiopath.evaluation._cox import DTYPE, CoxBatch, as_tensor, resolve_device, torch_threads

log = logging.getLogger(__name__)

__all__ = [
    "CoxFit",
    "CoxnetPath",
    "SurvivalSVMFit",
    "TorchCoxPH",
    "TorchCoxnet",
    "TorchFastSurvivalSVM",
    "fit_cox_ridge",
    "fit_coxnet_path",
    "fit_survival_svm",
    "survival_ranks",
]


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


# ----------------------------------------------------------------------------- ridge Cox


@dataclass
class CoxFit:
    """Result of :func:`fit_cox_ridge` for B problems."""

    coef: torch.Tensor  # [B, p]
    loss: torch.Tensor  # [B] penalised loss / n
    converged: torch.Tensor  # [B] bool
    failed: torch.Tensor  # [B] bool (overflow or singular Hessian)
    n_iter: int


def fit_cox_ridge(
    X,
    time,
    event,
    alpha=0.0,
    *,
    sample_weight=None,
    feature_mask=None,
    n_iter: int = 100,
    tol: float = 1e-9,
    device="auto",
) -> CoxFit:
    r"""Ridge-penalised Cox regression for B problems at once, by damped Newton-Raphson.

    Minimises, per problem, scikit-survival's ``CoxPHSurvivalAnalysis`` objective

    .. math::

        \frac{1}{n}\Big[-\ell_{\mathrm{Breslow}}(\beta) + \frac{\alpha}{2}\lVert\beta\rVert^2\Big].

    Newton steps are halved until the loss decreases; a problem stops when
    :math:`|1 - f_{new}/f_{old}| <` ``tol`` (scikit-survival's rule).

    Parameters
    ----------
    X
        ``[B, n, p]`` or ``[n, p]`` design.
    time, event
        ``[B, n]`` or ``[n]``.
    alpha
        Scalar or ``[B]`` penalties.
    sample_weight
        ``[B, n]`` 0/1 membership of samples in each problem (inner folds).
    feature_mask
        ``[p]`` or ``[B, p]`` 0/1: padded features are held at 0.
    """
    device = resolve_device(device)
    X, time, event = as_tensor(X, device), as_tensor(time, device), as_tensor(event, device)
    w = None if sample_weight is None else as_tensor(sample_weight, device)
    batch = CoxBatch(X, time, event, w, batch_size=None)
    B, _, p = batch.X.shape
    alpha = _batch_param(alpha, B, device)
    fmask = _feature_mask(feature_mask, B, p, device)
    # with more features than samples, Newton runs in the n-dimensional span of the samples
    kernel = p > batch.n_samples
    K = torch.bmm(batch.X, batch.X.transpose(1, 2)) if kernel else None
    coef = torch.zeros(B, batch.n_samples if kernel else p, dtype=DTYPE, device=device)

    def loss_of(sub, c, a, k):
        if kernel:
            eta = torch.bmm(k, c.unsqueeze(-1)).squeeze(-1)
            return (sub.nll_from_eta(eta) + 0.5 * a * (c * eta).sum(1)) / sub.n
        return (sub.neg_log_likelihood(c) + 0.5 * a * (c * c).sum(1)) / sub.n

    loss = loss_of(batch, coef, alpha, K)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    failed = ~torch.isfinite(loss)
    todo = torch.nonzero(~failed).squeeze(1)
    it = 0
    for it in range(1, n_iter + 1):  # noqa: B007 (the count is returned)
        if todo.numel() == 0:
            break
        # only the problems still running are computed
        sub = batch.select(todo)
        c, a, f_old = coef[todo], alpha[todo], loss[todo]
        k = K[todo] if kernel else None
        delta = _ridge_newton_step(sub, c, a, fmask[todo], k)
        bad = ~torch.isfinite(delta).all(1)
        step = torch.ones_like(a)
        new_c = c - delta
        new_loss = loss_of(sub, new_c, a, k)
        for _ in range(40):
            worse = ~bad & ~(new_loss <= f_old)
            if not bool(worse.any()):
                break
            step = torch.where(worse, step * 0.5, step)
            cand = c - step.unsqueeze(1) * delta
            new_c = torch.where(worse.unsqueeze(1), cand, new_c)
            new_loss = torch.where(worse, loss_of(sub, cand, a, k), new_loss)
        bad |= ~torch.isfinite(new_loss)
        ok = ~bad
        coef[todo] = torch.where(ok.unsqueeze(1), new_c, c)
        loss[todo] = torch.where(ok, new_loss, f_old)
        done = ok & ((torch.abs(1 - new_loss / f_old) < tol) | (new_loss == f_old))
        failed[todo] = bad
        converged[todo] = done
        todo = todo[ok & ~done]
    beta = torch.bmm(batch.X.transpose(1, 2), coef.unsqueeze(-1)).squeeze(-1) if kernel else coef
    beta = beta * fmask
    return CoxFit(beta, loss, converged, failed, it)


def _ridge_newton_step(sub: CoxBatch, c, alpha, fmask, K) -> torch.Tensor:
    r"""Newton direction of the ridge Cox loss, in feature space or, with ``K``, sample space.

    In feature space: :math:`(\nabla^2(-\ell) + \alpha I)^{-1} (\nabla(-\ell) + \alpha\beta)`.
    With :math:`\beta = X^\top u` (the ridge solution lies in the span of the samples) and
    :math:`\nabla^2(-\ell) = X^\top M X`, :math:`\nabla(-\ell) = -X^\top r`, the step is
    :math:`X^\top v` with :math:`(M K + \alpha I) v = \alpha u - r`, :math:`K = X X^\top`:
    an ``n x n`` instead of a ``p x p`` system. Non-finite entries flag a failed problem.
    """
    B = c.shape[0]
    if K is None:
        p = c.shape[1]
        _, grad, hess = sub.derivatives(c)
        grad = (grad + alpha.unsqueeze(1) * c) * fmask
        hess = hess * fmask.unsqueeze(1) * fmask.unsqueeze(2)
        # padded features get a unit diagonal so the system stays regular and their step is 0
        eye = torch.eye(p, dtype=c.dtype, device=c.device)
        hess = hess + (alpha.view(B, 1, 1) * fmask.unsqueeze(1) + (1 - fmask).unsqueeze(1)) * eye
        delta, info = torch.linalg.solve_ex(hess, grad.unsqueeze(-1))
    else:
        n = c.shape[1]
        eta = torch.bmm(K, c.unsqueeze(-1)).squeeze(-1)
        w, _ = sub._exp(eta)
        event = sub.event
        s0 = torch.gather(torch.cumsum(w, 1), 1, sub.end)
        safe_s0 = torch.where(event > 0, s0, torch.ones_like(s0))
        v = event / safe_s0
        cc = torch.gather(torch.flip(torch.cumsum(torch.flip(v, [1]), 1), [1]), 1, sub.start)
        resid = event - w * cc
        # P[i, j] = w_j / S0(t_i) for j in the risk set of i (sorted: positions 0 .. end_i)
        in_risk = torch.arange(n, device=c.device).view(1, 1, n) <= sub.end.unsqueeze(2)
        P = in_risk * (w.unsqueeze(1) / safe_s0.unsqueeze(2))
        M = torch.diag_embed(w * cc) - torch.bmm(P.transpose(1, 2), event.unsqueeze(2) * P)
        eye = torch.eye(n, dtype=c.dtype, device=c.device)
        A = torch.bmm(M, K) + alpha.view(B, 1, 1) * eye
        delta, info = torch.linalg.solve_ex(A, (alpha.unsqueeze(1) * c - resid).unsqueeze(-1))
    delta = delta.squeeze(-1)
    return torch.where((info != 0).unsqueeze(1), torch.full_like(delta, torch.nan), delta)


# ----------------------------------------------------------------------------- elastic net


@dataclass
class CoxnetPath:
    """Result of :func:`fit_coxnet_path` for B problems and A alphas."""

    coef: torch.Tensor  # [B, A, p] (on the centred design)
    alphas: torch.Tensor  # [B, A]
    deviance_ratio: torch.Tensor  # [B, A]
    n_alphas: torch.Tensor  # [B] length of each path after scikit-survival's early stop
    offset_mean: torch.Tensor  # [B, p] column means used for centring
    converged: torch.Tensor  # [B, A] bool
    failed: torch.Tensor  # [B] bool
    n_iter: int


def _soft_threshold(z: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    return torch.sign(z) * torch.clamp(z.abs() - thr, min=0.0)


def _fista(batch: CoxBatch, beta, y, t_mom, step, l1, l2, fmask, n, tol: float, rounds: int):
    """Up to ``rounds`` FISTA iterations (backtracking, adaptive restart) on a sub-batch.

    Minimises :math:`-\\ell(\\beta)/n + \\tfrac12 \\sum_j l2_j \\beta_j^2 + \\sum_j l1_j|\\beta_j|`;
    a problem is done when the proximal-gradient residual's infinity norm is below ``tol``.
    Linear predictors are carried along (:math:`X y` follows from :math:`X x` by
    linearity), so an iteration costs one :math:`X\\beta` and one :math:`X^\\top r`.
    ``y`` and ``t_mom`` carry the momentum between calls.
    Returns ``(beta, y, t_mom, step, done, failed, iterations)``.
    """
    B = beta.shape[0]
    x_prev = beta.clone()
    eta_x = batch.linear_predictor(x_prev)
    eta_y = batch.linear_predictor(y)
    active = torch.ones(B, dtype=torch.bool, device=beta.device)
    done = torch.zeros_like(active)
    bad = torch.zeros_like(active)
    it = 0
    for it in range(1, rounds + 1):  # noqa: B007 (the count is returned)
        nll, g = batch.nll_grad_from_eta(eta_y)
        f_y = nll / n + 0.5 * (l2 * y * y).sum(1)
        g = (g / n.unsqueeze(1) + l2 * y) * fmask
        for _ in range(60):
            s = step.unsqueeze(1)
            cand = _soft_threshold(y - s * g, s * l1) * fmask
            diff = cand - y
            eta_c = batch.linear_predictor(cand)
            f_c = batch.nll_from_eta(eta_c) / n + 0.5 * (l2 * cand * cand).sum(1)
            bound = f_y + (g * diff).sum(1) + (diff * diff).sum(1) / (2 * step)
            shrink = active & ~(f_c <= bound + 1e-12 * f_y.abs())
            if not bool(shrink.any()):
                break
            step = torch.where(shrink, step * 0.5, step)
        nonfinite = active & ~(torch.isfinite(cand).all(1) & torch.isfinite(f_c))
        bad |= nonfinite
        active &= ~nonfinite
        resid = (diff.abs() / step.unsqueeze(1)).amax(1)
        # adaptive restart when the momentum points uphill (O'Donoghue & Candes 2015)
        restart = ((y - cand) * (cand - x_prev)).sum(1) > 0
        t_new = (1 + torch.sqrt(1 + 4 * t_mom * t_mom)) / 2
        mom = torch.where(restart, torch.zeros_like(t_mom), (t_mom - 1) / t_new).unsqueeze(1)
        upd = active.unsqueeze(1)
        y = torch.where(upd, cand + mom * (cand - x_prev), y)
        eta_y = torch.where(upd, eta_c + mom * (eta_c - eta_x), eta_y)
        x_prev = torch.where(upd, cand, x_prev)
        eta_x = torch.where(upd, eta_c, eta_x)
        t_mom = torch.where(restart, torch.ones_like(t_new), t_new)
        finished = active & (resid < tol)
        done |= finished
        active &= ~finished
        if not bool(active.any()):
            break
    return x_prev, y, t_mom, step, done, bad, it


def fit_coxnet_path(
    X,
    time,
    event,
    *,
    l1_ratio=0.5,
    alphas=None,
    n_alphas: int = 100,
    alpha_min_ratio="auto",
    penalty_factor=None,
    sample_weight=None,
    feature_mask=None,
    tol: float = 1e-9,
    max_iter: int = 20000,
    chunk: int = 25,
    init=None,
    grid_only: bool = False,
    device="auto",
) -> CoxnetPath:
    r"""Elastic-net Cox regression along a path of penalties, B problems at once.

    Minimises scikit-survival's ``CoxnetSurvivalAnalysis`` objective (glmnet's, Simon et al.
    2011, J Stat Softw 39(5)) on the column-centred design,

    .. math::

        -\frac{1}{n}\ell_{\mathrm{Breslow}}(\beta) + \alpha \sum_j w_j \Big(
        r\,|\beta_j| + \frac{1 - r}{2}\beta_j^2 \Big),

    with ``r = l1_ratio`` and penalty factors ``w`` rescaled to sum to p, by accelerated
    proximal gradient (FISTA with backtracking and adaptive restart, O'Donoghue & Candes
    2015), warm-started from one alpha to the next. Without ``alphas`` the path is
    scikit-survival's: :math:`\alpha_{max} = \max_j |\nabla_j \ell(0)/n| / (r w_j)` down to
    ``alpha_min_ratio`` times that on a log scale, and a path stops early once the deviance
    ratio stops changing (``coxnet.h``), so ``n_alphas`` matches scikit-survival's.

    A problem stops at an alpha when the proximal-gradient residual (the KKT violation)
    is below ``tol`` in the infinity norm. ``init`` (``[B, p]``) warm-starts the first
    alpha; ``grid_only`` returns the alphas without solving anything.
    """
    device = resolve_device(device)
    X, time, event = as_tensor(X, device), as_tensor(time, device), as_tensor(event, device)
    w = None if sample_weight is None else as_tensor(sample_weight, device)
    B = None
    for t in (X if X.dim() == 3 else None, time if time.dim() == 2 else None, w):
        if t is not None:
            B = t.shape[0]
    if B is None:
        lr = np.atleast_1d(np.asarray(l1_ratio, dtype=float))
        B = lr.shape[0] if alphas is None or np.ndim(alphas) < 2 else np.shape(alphas)[0]
        B = max(B, lr.shape[0])
    if X.dim() == 2:
        X = X.unsqueeze(0).expand(B, -1, -1)
    if w is None:
        w = torch.ones(B, X.shape[1], dtype=DTYPE, device=device)
    # centre each problem's columns on its own samples, as scikit-survival does
    n_b = w.sum(1, keepdim=True)
    mean = (w.unsqueeze(-1) * X).sum(1) / n_b
    Xc = (X - mean.unsqueeze(1)) * w.unsqueeze(-1)
    batch = CoxBatch(Xc, time, event, w, batch_size=B)
    B, n_max, p = batch.X.shape
    n = batch.n
    r = _batch_param(l1_ratio, B, device)
    fmask = _feature_mask(feature_mask, B, p, device)
    if penalty_factor is None:
        pf = fmask.clone()
    else:
        pf = _feature_mask(penalty_factor, B, p, device) * fmask
    pf = pf * fmask.sum(1, keepdim=True) / pf.sum(1, keepdim=True).clamp_min(1e-300)

    loglik_sat, loglik_null = batch.null_deviance_terms()
    dev_null = loglik_sat - loglik_null

    beta = torch.zeros(B, p, dtype=DTYPE, device=device)
    if alphas is None:
        _, grad0, _ = batch.derivatives(beta, hessian=False)
        inv_pf = torch.where(pf > 0, 1.0 / pf.clamp_min(1e-300), torch.zeros_like(pf))
        alpha_max = ((grad0.abs() / n.unsqueeze(1)) * inv_pf * fmask).amax(1) / r
        if isinstance(alpha_min_ratio, str):
            ratio = 0.0001 if int(n.max()) > int(fmask.sum(1).max()) else 0.01
        else:
            ratio = float(alpha_min_ratio)
        A = int(n_alphas)
        factor = ratio ** (1.0 / (A - 1)) if A > 1 else 1.0
        grid = alpha_max.unsqueeze(1) * factor ** torch.arange(A, dtype=DTYPE, device=device)
        first_is_max = True
    else:
        a = as_tensor(alphas, device)
        grid = a.unsqueeze(0).expand(B, -1).clone() if a.dim() == 1 else a
        A = grid.shape[1]
        first_is_max = False

    coefs = torch.zeros(B, A, p, dtype=DTYPE, device=device)
    dev_ratio = torch.zeros(B, A, dtype=DTYPE, device=device)
    conv_all = torch.zeros(B, A, dtype=torch.bool, device=device)
    failed = torch.zeros(B, dtype=torch.bool, device=device)
    total_iter = 0
    if grid_only:
        n_all = torch.full((B,), A, dtype=torch.long, device=device)
        return CoxnetPath(coefs, grid, dev_ratio, n_all, mean, conv_all, failed, 0)
    if init is not None:
        beta = as_tensor(init, device).reshape(B, p) * fmask

    for k in range(A):
        alpha = grid[:, k]
        if first_is_max and k == 0:
            # scikit-survival evaluates the first point with a huge alpha: all coefficients 0
            alpha_eff = torch.full_like(alpha, 1e35)
        else:
            alpha_eff = alpha
        l1 = (alpha_eff * r).unsqueeze(1) * pf
        l2 = (alpha_eff * (1 - r)).unsqueeze(1) * pf
        # step 1/L from a bound on the local curvature; backtracking guards the rest
        step = 1.0 / (batch.curvature_bound(beta) / n + l2.amax(1)).clamp_min(1e-12)
        conv = torch.zeros(B, dtype=torch.bool, device=device)
        y = beta.clone()
        t_mom = torch.ones(B, dtype=DTYPE, device=device)
        todo = torch.nonzero(~failed).squeeze(1)
        used = 0
        while todo.numel() and used < max_iter:
            # solve only the problems still running, a chunk of iterations at a time
            rounds = min(chunk, max_iter - used)
            sub = batch.select(todo)
            b_new, y_new, t_new, s_new, done, bad, it = _fista(
                sub,
                beta[todo],
                y[todo],
                t_mom[todo],
                step[todo],
                l1[todo],
                l2[todo],
                fmask[todo],
                n[todo],
                tol,
                rounds,
            )
            beta[todo] = b_new
            y[todo] = y_new
            t_mom[todo] = t_new
            step[todo] = s_new
            conv[todo] = done
            failed[todo] = failed[todo] | bad
            total_iter += it
            used += rounds
            todo = todo[~done & ~bad]
        coefs[:, k] = beta
        conv_all[:, k] = conv
        loglik = -batch.neg_log_likelihood(beta) / n + batch.event.sum(1) / n * torch.log(n)
        dev_ratio[:, k] = 1.0 - (loglik_sat - loglik) / dev_null
    # scikit-survival stops a path once the deviance ratio changes by < 0.1 % over 5 alphas
    n_used = torch.full((B,), A, dtype=torch.long, device=device)
    if A > 5:
        ratio = dev_ratio[:, 1 : A - 4] / dev_ratio[:, 5:]
        stop = ratio > 0.999
        has = stop.any(1)
        first = torch.argmax(stop.to(torch.int64), dim=1) + 5 + 1
        n_used = torch.where(has, first, n_used)
    return CoxnetPath(coefs, grid, dev_ratio, n_used, mean, conv_all, failed, total_iter)


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
    """
    device = resolve_device(device)
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
    n, p = X.shape[1], X.shape[2]
    w = (
        torch.ones(B, n, dtype=DTYPE, device=device)
        if sample_weight is None
        else as_tensor(sample_weight, device)
    )
    fmask = _feature_mask(feature_mask, B, p, device)
    X = X * fmask.unsqueeze(1)
    alpha = _batch_param(alpha, B, device)
    pairs = (
        (event * w).unsqueeze(2).bool()
        & w.unsqueeze(1).bool()
        & (rank.unsqueeze(2) < rank.unsqueeze(1))
    ).to(DTYPE)
    if bool((pairs.sum((1, 2)) == 0).any()):
        raise ValueError("Data has no comparable pairs, cannot fit model.")
    # with more features than samples, Newton runs in the n-dimensional span of the samples
    kernel = p > n
    K = torch.bmm(X, X.transpose(1, 2)) if kernel else None
    coef = torch.zeros(B, n if kernel else p, dtype=DTYPE, device=device)

    def terms(c, Xs, Ks, Ps, a):
        f = torch.bmm(Ks if kernel else Xs, c.unsqueeze(-1)).squeeze(-1)
        margin = 1.0 - f.unsqueeze(1) + f.unsqueeze(2)  # [B, i, j] = 1 - (f_j - f_i)
        act = Ps * (margin > 0)
        m = act * margin
        norm = (c * f).sum(1) if kernel else (c * c).sum(1)
        return 0.5 * norm + 0.5 * a * (m * margin).sum((1, 2)), act, m

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
        f_old, act, m = terms(c, Xs, Ks, Ps, a)
        z = m.sum(2) - m.sum(1)
        if kernel:
            q = c + a.unsqueeze(1) * z  # gradient = X^T q
            grad_norm = torch.bmm(Xs.transpose(1, 2), q.unsqueeze(-1)).squeeze(-1).abs().amax(1)
        else:
            q = (
                c + a.unsqueeze(1) * torch.bmm(Xs.transpose(1, 2), z.unsqueeze(-1)).squeeze(-1)
            ) * fmask[todo]
            grad_norm = q.abs().amax(1)
        done = grad_norm <= tol * (1 + f_old.abs())
        deg = act.sum(2) + act.sum(1)
        lap = torch.diag_embed(deg) - act - act.transpose(1, 2)
        if kernel:
            eye = torch.eye(n, dtype=DTYPE, device=device)
            system = eye + a.view(-1, 1, 1) * torch.bmm(lap, Ks)
        else:
            eye = torch.eye(p, dtype=DTYPE, device=device)
            system = eye + a.view(-1, 1, 1) * torch.bmm(Xs.transpose(1, 2), torch.bmm(lap, Xs))
        delta, info = torch.linalg.solve_ex(system, q.unsqueeze(-1))
        delta = delta.squeeze(-1)
        bad = ~done & ((info != 0) | ~torch.isfinite(delta).all(1))
        slope = (
            (torch.bmm(Ks, delta.unsqueeze(-1)).squeeze(-1) * q).sum(1)
            if kernel
            else (q * delta).sum(1)
        )
        step = torch.ones_like(a)
        new = c - delta
        new_loss = terms(new, Xs, Ks, Ps, a)[0]
        running = ~done & ~bad
        for _ in range(40):
            worse = running & ~(new_loss <= f_old - 1e-4 * step * slope)
            if not bool(worse.any()):
                break
            step = torch.where(worse, step * 0.5, step)
            cand = c - step.unsqueeze(1) * delta
            new = torch.where(worse.unsqueeze(1), cand, new)
            new_loss = torch.where(worse, terms(cand, Xs, Ks, Ps, a)[0], new_loss)
        stalled = running & (new_loss >= f_old) & (step < 1e-10)
        coef[todo] = torch.where(running.unsqueeze(1), new, c)
        loss[todo] = torch.where(running, new_loss, f_old)
        converged[todo] = done | stalled
        failed[todo] = bad
        todo = todo[running & ~stalled]
    if kernel:
        coef = torch.bmm(X.transpose(1, 2), coef.unsqueeze(-1)).squeeze(-1) * fmask
    return SurvivalSVMFit(coef, loss, converged, failed, it)


# ----------------------------------------------------------------------------- estimators


def _check_xy(X, y):
    X = check_array(X, dtype=np.float64, ensure_min_samples=2)
    event, time = check_array_survival(X, y)
    return X, event, time


class _TorchEstimator(BaseEstimator, SurvivalAnalysisMixin):
    def _device(self) -> torch.device:
        return resolve_device(getattr(self, "device", "auto"))

    def predict(self, X) -> np.ndarray:
        """Risk scores (higher = earlier event)."""
        check_is_fitted(self, "coef_")
        X = check_array(X, dtype=np.float64)
        return X @ self.coef_ - getattr(self, "_offset", 0.0)


class TorchCoxPH(_TorchEstimator):
    r"""Cox proportional hazards model with a ridge penalty, fitted in torch.

    A drop-in replacement for ``sksurv.linear_model.CoxPHSurvivalAnalysis`` (Breslow ties)
    that minimises the same objective,
    :math:`\frac{1}{n}[-\ell(\beta) + \frac{\alpha}{2}\lVert\beta\rVert^2]` (Cox 1972), with
    the batched Newton solver :func:`fit_cox_ridge`. The baseline hazard is Breslow's
    estimator (scikit-survival's ``BreslowEstimator``), so survival functions are identical.

    Parameters
    ----------
    alpha : float
        Ridge penalty.
    n_iter : int
        Maximum Newton iterations.
    tol : float
        Stop when the relative change of the loss is below ``tol``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    n_threads : int or None
        torch intra-op threads while fitting on CPU (None: torch's setting).

    Attributes
    ----------
    coef_ : ndarray, shape (n_features,)
    cum_baseline_hazard_, baseline_survival_ : sksurv.functions.StepFunction
    unique_times_ : ndarray
    """

    def __init__(
        self,
        alpha: float = 0.0,
        *,
        n_iter: int = 100,
        tol: float = 1e-9,
        device="auto",
        n_threads: int | None = 1,
    ):
        self.alpha = alpha
        self.n_iter = n_iter
        self.tol = tol
        self.device = device
        self.n_threads = n_threads

    def fit(self, X, y):
        X, event, time = _check_xy(X, y)
        if float(self.alpha) < 0:
            raise ValueError(f"alpha must be positive, but was {self.alpha!r}")
        with torch_threads(self.n_threads, self._device()):
            res = fit_cox_ridge(
                X, time, event, self.alpha, n_iter=self.n_iter, tol=self.tol, device=self._device()
            )
        if bool(res.failed[0]):
            raise ArithmeticError(
                "Cox model overflowed or met a singular Hessian; consider increasing alpha."
            )
        if not bool(res.converged[0]):
            warnings.warn(
                "Optimization did not converge: Maximum number of iterations has been exceeded.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.coef_ = res.coef[0].cpu().numpy()
        self.n_features_in_ = X.shape[1]
        self._set_baseline(X @ self.coef_, event, time)
        return self

    def _set_baseline(self, lp, event, time):
        self._baseline_model = BreslowEstimator().fit(lp, event, time)

    @property
    def cum_baseline_hazard_(self):
        return self._baseline_model.cum_baseline_hazard_

    @property
    def baseline_survival_(self):
        return self._baseline_model.baseline_survival_

    @property
    def unique_times_(self):
        return self._baseline_model.unique_times_

    def predict_survival_function(self, X, return_array: bool = False):
        """Survival functions :math:`S_0(t)^{\\exp(x^\\top\\beta)}` (Breslow baseline)."""
        return self._predict_survival_function(self._baseline_model, self.predict(X), return_array)

    def predict_cumulative_hazard_function(self, X, return_array: bool = False):
        """Cumulative hazards :math:`H_0(t) \\exp(x^\\top\\beta)` (Breslow baseline)."""
        return self._predict_cumulative_hazard_function(
            self._baseline_model, self.predict(X), return_array
        )

    @classmethod
    def from_coef(cls, coef, X, event, time, **params) -> TorchCoxPH:
        """An estimator from coefficients solved elsewhere (a batched fit) on ``X``."""
        est = cls(**params)
        est.coef_ = np.asarray(coef, dtype=np.float64)
        est.n_features_in_ = est.coef_.shape[0]
        est._set_baseline(np.asarray(X, dtype=np.float64) @ est.coef_, event, time)
        return est


class TorchCoxnet(_TorchEstimator):
    r"""Elastic-net Cox model along the alpha path, fitted in torch.

    A drop-in replacement for ``sksurv.linear_model.CoxnetSurvivalAnalysis`` (same
    objective, path, centring, early stop and interpolation of coefficients between
    alphas), solved by :func:`fit_coxnet_path`.

    Parameters
    ----------
    n_alphas, alphas, alpha_min_ratio, l1_ratio, penalty_factor
        As in scikit-survival.
    tol : float
        Infinity norm of the proximal-gradient residual at which an alpha is solved.
    max_iter : int
        Maximum iterations per alpha.
    fit_baseline_model : bool
        Fit Breslow baselines, one per alpha, for survival functions.
    device : str
    n_threads : int or None
        torch intra-op threads while fitting on CPU (None: torch's setting).

    Attributes
    ----------
    coef_ : ndarray, shape (n_features, n_alphas)
    alphas_, offset_, deviance_ratio_ : ndarray
    """

    def __init__(
        self,
        *,
        n_alphas: int = 100,
        alphas=None,
        alpha_min_ratio="auto",
        l1_ratio: float = 0.5,
        penalty_factor=None,
        tol: float = 1e-9,
        max_iter: int = 20000,
        fit_baseline_model: bool = False,
        device="auto",
        n_threads: int | None = 1,
    ):
        self.n_threads = n_threads
        self.n_alphas = n_alphas
        self.alphas = alphas
        self.alpha_min_ratio = alpha_min_ratio
        self.l1_ratio = l1_ratio
        self.penalty_factor = penalty_factor
        self.tol = tol
        self.max_iter = max_iter
        self.fit_baseline_model = fit_baseline_model
        self.device = device

    def fit(self, X, y):
        X, event, time = _check_xy(X, y)
        if not 0.0 < float(self.l1_ratio) <= 1.0:
            raise ValueError(f"l1_ratio must be in (0, 1], got {self.l1_ratio!r}")
        alphas = None if self.alphas is None else np.atleast_1d(np.asarray(self.alphas, float))
        with torch_threads(self.n_threads, self._device()):
            res = fit_coxnet_path(
                X,
                time,
                event,
                l1_ratio=self.l1_ratio,
                alphas=alphas,
                n_alphas=self.n_alphas,
                alpha_min_ratio=self.alpha_min_ratio,
                penalty_factor=self.penalty_factor,
                tol=self.tol,
                max_iter=self.max_iter,
                device=self._device(),
            )
        if bool(res.failed[0]):
            raise ArithmeticError(
                "Numerical error, because weights are too large. Consider increasing alpha."
            )
        k = int(res.n_alphas[0])
        if not bool(res.converged[0, :k].all()):
            warnings.warn(
                f"Optimization terminated early, you might want to increase the number of "
                f"iterations (max_iter={self.max_iter}).",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._store(res.coef[0, :k].T, res.alphas[0, :k], res.deviance_ratio[0, :k], X, event, time)
        return self

    def _store(self, coef, alphas, dev_ratio, X, event, time):
        coef = coef.cpu().numpy() if isinstance(coef, torch.Tensor) else np.asarray(coef)
        self.coef_ = coef
        self.alphas_ = (
            alphas.cpu().numpy() if isinstance(alphas, torch.Tensor) else np.asarray(alphas)
        )
        self.deviance_ratio_ = (
            dev_ratio.cpu().numpy()
            if isinstance(dev_ratio, torch.Tensor)
            else np.asarray(dev_ratio)
        )
        x_offset = X.mean(0)
        self.offset_ = x_offset @ coef
        self.n_features_in_ = X.shape[1]
        if self.fit_baseline_model:
            lp = (X - x_offset) @ coef
            self._baseline_models = tuple(
                BreslowEstimator().fit(lp[:, i], event, time) for i in range(coef.shape[1])
            )
        else:
            self._baseline_models = None

    @classmethod
    def from_path(cls, coef, alphas, X, event, time, deviance_ratio=None, **params) -> TorchCoxnet:
        """An estimator from a path solved elsewhere: ``coef`` is ``[n_alphas, n_features]``."""
        est = cls(**params)
        coef = np.asarray(coef, dtype=np.float64).T
        dev = np.full(coef.shape[1], np.nan) if deviance_ratio is None else deviance_ratio
        est._store(coef, np.asarray(alphas, float), dev, np.asarray(X, float), event, time)
        return est

    def _get_coef(self, alpha):
        check_is_fitted(self, "coef_")
        if alpha is None:
            return self.coef_[:, -1], self.offset_[-1]
        # scikit-survival's interpolation between the two neighbouring alphas of the path
        exact, idx = False, None
        for i, val in enumerate(self.alphas_):
            if val > alpha:
                idx = i
            elif alpha - val < np.finfo(float).eps:
                idx, exact = i, True
                break
        if idx is None:
            return self.coef_[:, 0], self.offset_[0]
        if exact or idx == len(self.alphas_) - 1:
            return self.coef_[:, idx], self.offset_[idx]
        a1, a2 = self.alphas_[idx + 1], self.alphas_[idx]
        frac = (alpha - a1) / (a2 - a1)
        coef = frac * self.coef_[:, idx] + (1.0 - frac) * self.coef_[:, idx + 1]
        offset = frac * self.offset_[idx] + (1.0 - frac) * self.offset_[idx + 1]
        return coef, offset

    def predict(self, X, alpha=None) -> np.ndarray:
        """Risk scores :math:`x^\\top\\beta_\\alpha` minus the training offset."""
        X = check_array(X, dtype=np.float64)
        coef, offset = self._get_coef(alpha)
        return X @ coef - offset

    def _baseline(self, alpha):
        if self._baseline_models is None:
            raise ValueError("`fit` must be called with the fit_baseline_model option set to True.")
        if alpha is None:
            return self._baseline_models[-1]
        close = np.isclose(alpha, self.alphas_)
        if not close.any():
            raise ValueError(f"alpha must be one value of alphas_: {self.alphas_}")
        return self._baseline_models[int(np.flatnonzero(close)[0])]

    def predict_survival_function(self, X, alpha=None, return_array: bool = False):
        """Survival functions from the Breslow baseline of ``alpha`` (a value of ``alphas_``)."""
        base = self._baseline(alpha)
        return self._predict_survival_function(base, self.predict(X, alpha=alpha), return_array)

    def predict_cumulative_hazard_function(self, X, alpha=None, return_array: bool = False):
        base = self._baseline(alpha)
        return self._predict_cumulative_hazard_function(
            base, self.predict(X, alpha=alpha), return_array
        )


class TorchFastSurvivalSVM(_TorchEstimator):
    r"""Linear survival SVM with the ranking objective, fitted in torch.

    A drop-in replacement for ``sksurv.svm.FastSurvivalSVM(rank_ratio=1.0,
    fit_intercept=False)`` (Polsterl et al. 2015) solved by :func:`fit_survival_svm`. Tied
    times are ordered at random exactly as scikit-survival does for the same
    ``random_state``. ``predict`` returns risk scores :math:`-x^\top w`.

    Parameters
    ----------
    alpha : float
        Weight of the squared hinge loss (larger = less regularisation).
    rank_ratio : float
        Must be 1.0 (pure ranking).
    fit_intercept : bool
        Must be False.
    max_iter, tol : Newton iterations and gradient tolerance.
    random_state : int, RandomState or None
    device : str
    n_threads : int or None
        torch intra-op threads while fitting on CPU (None: torch's setting).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        rank_ratio: float = 1.0,
        fit_intercept: bool = False,
        max_iter: int = 100,
        tol: float = 1e-10,
        random_state=None,
        device="auto",
        n_threads: int | None = 1,
    ):
        self.n_threads = n_threads
        self.alpha = alpha
        self.rank_ratio = rank_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.device = device

    def fit(self, X, y):
        X, event, time = _check_xy(X, y)
        if self.rank_ratio != 1.0 or self.fit_intercept:
            raise ValueError(
                "TorchFastSurvivalSVM implements rank_ratio=1.0, fit_intercept=False only"
            )
        if not float(self.alpha) > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha!r}")
        ranks = survival_ranks(time, self.random_state)
        with torch_threads(self.n_threads, self._device()):
            res = fit_survival_svm(
                X,
                ranks,
                event,
                self.alpha,
                max_iter=self.max_iter,
                tol=self.tol,
                device=self._device(),
            )
        if bool(res.failed[0]):
            raise ArithmeticError("survival SVM: singular or non-finite Newton system")
        if not bool(res.converged[0]):
            warnings.warn("Optimization did not converge", ConvergenceWarning, stacklevel=2)
        self.coef_ = res.coef[0].cpu().numpy()
        self.n_features_in_ = X.shape[1]
        return self

    @classmethod
    def from_coef(cls, coef, **params) -> TorchFastSurvivalSVM:
        est = cls(**params)
        est.coef_ = np.asarray(coef, dtype=np.float64)
        est.n_features_in_ = est.coef_.shape[0]
        return est

    def predict(self, X) -> np.ndarray:
        """Risk scores :math:`-x^\\top w` (higher = earlier event), as scikit-survival."""
        check_is_fitted(self, "coef_")
        X = check_array(X, dtype=np.float64)
        return -(X @ self.coef_)
