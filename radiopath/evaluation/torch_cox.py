"""Batched torch solvers of the penalised Cox models: ridge (CoxPH) and elastic net (Coxnet).

:func:`fit_cox_ridge` minimises scikit-survival's ``CoxPHSurvivalAnalysis`` objective by
damped Newton steps, :func:`fit_coxnet_path` ``CoxnetSurvivalAnalysis``'s along its alpha path
by FISTA; both solve B problems at once on the :class:`~radiopath.evaluation._cox.CoxBatch`
engine. The estimators wrapping them are in :mod:`.estimators`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from radiopath.evaluation._cox import (
    DTYPE,
    CoxBatch,
    GroupedCoxBatch,
    _batch_param,
    _feature_mask,
    as_tensor,
    resolve_device,
    start_coefficients,
)

__all__ = ["CoxFit", "CoxnetPath", "fit_cox_ridge", "fit_coxnet_path"]

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
    init=None,
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
    init
        ``[B, p]`` starting coefficients (e.g. the solution of a neighbouring ``alpha``);
        None starts at 0.
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
    if init is None:
        coef = torch.zeros(B, batch.n_samples if kernel else p, dtype=DTYPE, device=device)
    else:
        coef = start_coefficients(init, batch.X, kernel, fmask)

    loss = _ridge_loss(batch, coef, alpha, K)
    converged = torch.zeros(B, dtype=torch.bool, device=device)
    failed = ~torch.isfinite(loss)
    todo = torch.nonzero(~failed).squeeze(1)
    it = 0
    for it in range(1, n_iter + 1):  # noqa: B007 (the count is returned)
        if todo.numel() == 0:
            break
        ok, done = _ridge_newton_update(batch, todo, coef, loss, alpha, fmask, K, tol)
        failed[todo] = ~ok
        converged[todo] = done
        todo = todo[ok & ~done]
    beta = torch.bmm(batch.X.transpose(1, 2), coef.unsqueeze(-1)).squeeze(-1) if kernel else coef
    beta = beta * fmask
    return CoxFit(beta, loss, converged, failed, it)


def _ridge_loss(sub: CoxBatch, c, alpha, K) -> torch.Tensor:
    """The penalised loss / n of each problem, at ``c`` in feature space or, with ``K``, sample space."""
    if K is not None:
        eta = torch.bmm(K, c.unsqueeze(-1)).squeeze(-1)
        return (sub.nll_from_eta(eta) + 0.5 * alpha * (c * eta).sum(1)) / sub.n
    return (sub.neg_log_likelihood(c) + 0.5 * alpha * (c * c).sum(1)) / sub.n


def _ridge_newton_update(batch: CoxBatch, todo, coef, loss, alpha, fmask, K, tol: float):
    """One damped Newton step of the problems ``todo``, written into ``coef`` and ``loss``.

    Only the problems still running are computed. The step is halved until the loss does
    not increase; a problem whose step or new loss is not finite keeps its coefficients.
    Returns ``(ok, done)`` over ``todo``: the step was finite, and the relative change of
    the loss fell below ``tol``.
    """
    sub = batch.select(todo)
    c, a, f_old = coef[todo], alpha[todo], loss[todo]
    k = None if K is None else K[todo]
    delta = _ridge_newton_step(sub, c, a, fmask[todo], k)
    bad = ~torch.isfinite(delta).all(1)
    step = torch.ones_like(a)
    new_c = c - delta
    new_loss = _ridge_loss(sub, new_c, a, k)
    for _ in range(40):
        worse = ~bad & ~(new_loss <= f_old)
        if not bool(worse.any()):
            break
        step = torch.where(worse, step * 0.5, step)
        cand = c - step.unsqueeze(1) * delta
        new_c = torch.where(worse.unsqueeze(1), cand, new_c)
        new_loss = torch.where(worse, _ridge_loss(sub, cand, a, k), new_loss)
    bad |= ~torch.isfinite(new_loss)
    ok = ~bad
    coef[todo] = torch.where(ok.unsqueeze(1), new_c, c)
    loss[todo] = torch.where(ok, new_loss, f_old)
    done = ok & ((torch.abs(1 - new_loss / f_old) < tol) | (new_loss == f_old))
    return ok, done


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
    groups=None,
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
    alpha; ``grid_only`` returns the alphas without solving anything. With ``groups``
    (``[B]``), ``X`` is ``[G, n, p]`` and problem b's design is ``X[groups[b]]``
    (:class:`~radiopath.evaluation._cox.GroupedCoxBatch`: the design is multiplied once for
    all the problems that share it).
    """
    device = resolve_device(device)
    batch, mean = _centred_batch(X, time, event, sample_weight, groups, l1_ratio, alphas, device)
    B, p = batch.batch_size, batch.n_features
    r = _batch_param(l1_ratio, B, device)
    fmask = _feature_mask(feature_mask, B, p, device)
    if penalty_factor is None:
        pf = fmask.clone()
    else:
        pf = _feature_mask(penalty_factor, B, p, device) * fmask
    pf = pf * fmask.sum(1, keepdim=True) / pf.sum(1, keepdim=True).clamp_min(1e-300)
    if alphas is None:
        grid = _coxnet_alpha_grid(batch, pf, fmask, r, n_alphas, alpha_min_ratio)
    else:
        a = as_tensor(alphas, device)
        grid = a.unsqueeze(0).expand(B, -1).clone() if a.dim() == 1 else a
    A = grid.shape[1]
    if grid_only:
        coefs = torch.zeros(B, A, p, dtype=DTYPE, device=device)
        dev_ratio = torch.zeros(B, A, dtype=DTYPE, device=device)
        conv = torch.zeros(B, A, dtype=torch.bool, device=device)
        failed = torch.zeros(B, dtype=torch.bool, device=device)
        n_all = torch.full((B,), A, dtype=torch.long, device=device)
        return CoxnetPath(coefs, grid, dev_ratio, n_all, mean, conv, failed, 0)
    beta = torch.zeros(B, p, dtype=DTYPE, device=device)
    if init is not None:
        beta = as_tensor(init, device).reshape(B, p) * fmask
    coefs, dev_ratio, conv, failed, n_iter = _coxnet_walk_path(
        batch, beta, grid, r, pf, fmask, alphas is None, tol, max_iter, chunk
    )
    n_used = _coxnet_path_length(dev_ratio)
    return CoxnetPath(coefs, grid, dev_ratio, n_used, mean, conv, failed, n_iter)


def _centred_batch(X, time, event, sample_weight, groups, l1_ratio, alphas, device):
    """The Cox batch of :func:`fit_coxnet_path` on column-centred designs, and the means.

    B is read off the first batched input (``X`` ``[B, n, p]``, ``time`` ``[B, n]``,
    ``sample_weight``, ``groups``), else off ``l1_ratio`` and ``alphas``; each problem's
    columns are centred on its own samples, as scikit-survival does.
    """
    X, time, event = as_tensor(X, device), as_tensor(time, device), as_tensor(event, device)
    w = None if sample_weight is None else as_tensor(sample_weight, device)
    B = None
    for t in (X if X.dim() == 3 else None, time if time.dim() == 2 else None, w, groups):
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
    if groups is not None:
        batch = GroupedCoxBatch(X, torch.as_tensor(groups, device=device), time, event, w)
        return batch, batch.mean
    n_b = w.sum(1, keepdim=True)
    mean = (w.unsqueeze(-1) * X).sum(1) / n_b
    Xc = (X - mean.unsqueeze(1)) * w.unsqueeze(-1)
    return CoxBatch(Xc, time, event, w, batch_size=B), mean


def _coxnet_alpha_grid(batch: CoxBatch, pf, fmask, r, n_alphas: int, alpha_min_ratio):
    r"""scikit-survival's alpha path, ``[B, n_alphas]``, from alpha_max down on a log scale.

    :math:`\alpha_{max} = \max_j |\nabla_j \ell(0)/n| / (r w_j)` is the smallest alpha
    at which every coefficient is 0; ``"auto"`` ends the path at 1e-4 of it with more
    samples than features, else at 1e-2.
    """
    n = batch.n
    beta = torch.zeros(batch.batch_size, batch.n_features, dtype=DTYPE, device=n.device)
    _, grad0, _ = batch.derivatives(beta, hessian=False)
    inv_pf = torch.where(pf > 0, 1.0 / pf.clamp_min(1e-300), torch.zeros_like(pf))
    alpha_max = ((grad0.abs() / n.unsqueeze(1)) * inv_pf * fmask).amax(1) / r
    if isinstance(alpha_min_ratio, str):
        ratio = 0.0001 if int(n.max()) > int(fmask.sum(1).max()) else 0.01
    else:
        ratio = float(alpha_min_ratio)
    A = int(n_alphas)
    factor = ratio ** (1.0 / (A - 1)) if A > 1 else 1.0
    return alpha_max.unsqueeze(1) * factor ** torch.arange(A, dtype=DTYPE, device=n.device)


def _coxnet_walk_path(batch: CoxBatch, beta, grid, r, pf, fmask, from_max, tol, max_iter, chunk):
    """Solve every problem at each alpha of ``grid`` in turn, warm-started from the one before.

    ``from_max``: the grid starts at alpha_max, which scikit-survival solves as a huge alpha.
    Returns ``(coef [B, A, p], deviance_ratio [B, A], converged [B, A], failed [B],
    iterations)``.
    """
    B, A = grid.shape
    coefs = torch.zeros(B, A, batch.n_features, dtype=DTYPE, device=beta.device)
    dev_ratio = torch.zeros(B, A, dtype=DTYPE, device=beta.device)
    conv_all = torch.zeros(B, A, dtype=torch.bool, device=beta.device)
    failed = torch.zeros(B, dtype=torch.bool, device=beta.device)
    loglik_sat, loglik_null = batch.null_deviance_terms()
    dev_null = loglik_sat - loglik_null
    n = batch.n
    total_iter = 0
    for k in range(A):
        alpha = grid[:, k]
        if from_max and k == 0:
            # scikit-survival evaluates the first point with a huge alpha: all coefficients 0
            alpha_eff = torch.full_like(alpha, 1e35)
        else:
            alpha_eff = alpha
        l1 = (alpha_eff * r).unsqueeze(1) * pf
        l2 = (alpha_eff * (1 - r)).unsqueeze(1) * pf
        conv, it = _coxnet_solve_alpha(batch, beta, failed, l1, l2, fmask, tol, max_iter, chunk)
        total_iter += it
        coefs[:, k] = beta
        conv_all[:, k] = conv
        loglik = -batch.neg_log_likelihood(beta) / n + batch.event.sum(1) / n * torch.log(n)
        dev_ratio[:, k] = 1.0 - (loglik_sat - loglik) / dev_null
    return coefs, dev_ratio, conv_all, failed, total_iter


def _coxnet_solve_alpha(batch: CoxBatch, beta, failed, l1, l2, fmask, tol, max_iter, chunk):
    """Solve every problem at one alpha from ``beta``, updating ``beta`` and ``failed`` in place.

    Only the problems still running are solved, ``chunk`` FISTA iterations at a time, up to
    ``max_iter``. Returns ``(converged [B], iterations)``.
    """
    n = batch.n
    # step 1/L from a bound on the local curvature; backtracking guards the rest
    step = 1.0 / (batch.curvature_bound(beta) / n + l2.amax(1)).clamp_min(1e-12)
    conv = torch.zeros_like(failed)
    y = beta.clone()
    t_mom = torch.ones(batch.batch_size, dtype=DTYPE, device=beta.device)
    todo = torch.nonzero(~failed).squeeze(1)
    used = total = 0
    while todo.numel() and used < max_iter:
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
        total += it
        used += rounds
        todo = todo[~done & ~bad]
    return conv, total


def _coxnet_path_length(dev_ratio: torch.Tensor) -> torch.Tensor:
    """``[B]`` path lengths: scikit-survival stops a path once the deviance ratio changes by
    less than 0.1 % over 5 alphas (``coxnet.h``)."""
    B, A = dev_ratio.shape
    n_used = torch.full((B,), A, dtype=torch.long, device=dev_ratio.device)
    if A > 5:
        ratio = dev_ratio[:, 1 : A - 4] / dev_ratio[:, 5:]
        stop = ratio > 0.999
        has = stop.any(1)
        first = torch.argmax(stop.to(torch.int64), dim=1) + 5 + 1
        n_used = torch.where(has, first, n_used)
    return n_used
