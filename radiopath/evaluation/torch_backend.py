"""The batched torch backend of the protocol: CoxPH, FSVM and Coxnet on every fold at once.

All inner folds x grid points x outer folds of a model are solved in one batched call of the
solvers in :mod:`radiopath.evaluation.torch_models`, on folds padded to a common size
(:func:`_pad`). The backend only scores: the inner-CV Harrell's C of every (fold, split, grid
point) goes to :func:`~.selection.select_and_refit`, which picks each fold's penalty and
refits it on the whole training split through a batched ``refit`` here (with the retries of
its policy).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from radiopath.evaluation._cox import DTYPE
from radiopath.evaluation.fitting import FittedModel
from radiopath.evaluation.prepare import PreparedFold
from radiopath.evaluation.selection import Grid, Outcome, RetryPolicy, select_and_refit
from radiopath.evaluation.torch_models import (
    TorchCoxnet,
    TorchCoxPH,
    TorchFastSurvivalSVM,
    fit_cox_ridge,
    fit_coxnet_path,
    fit_survival_svm,
    survival_ranks,
)

# ----------------------------------------------------------------------------- helpers


def _harrell_cv(
    risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    member: torch.Tensor,
    tied_tol: float = 1e-8,
    chunk: int = 256,
) -> torch.Tensor:
    """Harrell's C of B risk vectors on B validation subsets: ``[B, n]`` -> ``[B]`` (NaN if no pair).

    Only the members of each subset are compared: they are gathered first, so the pairwise
    work is the validation size squared, not the padded training size squared.
    """
    k = max(int(member.sum(1).max()), 1)
    # each row's members first (stable: in their order), then padding
    pick = torch.argsort((~member).to(torch.int8), dim=1, stable=True)[:, :k]
    risk, time = torch.gather(risk, 1, pick), torch.gather(time, 1, pick)
    event, member = torch.gather(event, 1, pick), torch.gather(member, 1, pick)
    out = []
    for s in range(0, risk.shape[0], chunk):
        r, t, e, m = (
            risk[s : s + chunk],
            time[s : s + chunk],
            event[s : s + chunk],
            member[s : s + chunk],
        )
        ti, tj = t.unsqueeze(2), t.unsqueeze(1)
        comp = (e & m).unsqueeze(2) & m.unsqueeze(1) & ((tj > ti) | ((tj == ti) & ~e.unsqueeze(1)))
        diff = r.unsqueeze(2) - r.unsqueeze(1)  # risk_i - risk_j
        tie = diff.abs() <= tied_tol
        score = torch.where(tie, 0.5, (diff > 0).to(DTYPE))
        num = (comp * score).sum((1, 2))
        den = comp.sum((1, 2)).to(DTYPE)
        out.append(torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, torch.nan)))
    return torch.cat(out)


def _pad(preps: Sequence[PreparedFold], device) -> dict:
    F = len(preps)
    n = max(len(p.y_train) for p in preps)
    d = max(p.X_train.shape[1] for p in preps)
    X = torch.zeros(F, n, d, dtype=DTYPE, device=device)
    time = torch.zeros(F, n, dtype=DTYPE, device=device)
    event = torch.zeros(F, n, dtype=torch.bool, device=device)
    weight = torch.zeros(F, n, dtype=DTYPE, device=device)
    fmask = torch.zeros(F, d, dtype=DTYPE, device=device)
    for f, p in enumerate(preps):
        k, q = p.X_train.shape
        X[f, :k, :q] = torch.as_tensor(p.X_train, dtype=DTYPE, device=device)
        time[f, :k] = torch.as_tensor(p.train_time, dtype=DTYPE, device=device)
        event[f, :k] = torch.as_tensor(p.train_event, device=device)
        weight[f, :k] = 1
        fmask[f, :q] = 1
    S = max(len(p.splits) for p in preps)
    train_w = torch.zeros(F, S, n, dtype=DTYPE, device=device)
    val_m = torch.zeros(F, S, n, dtype=torch.bool, device=device)
    split_ok = torch.zeros(F, S, dtype=torch.bool, device=device)
    for f, p in enumerate(preps):
        for s, (tr, va) in enumerate(p.splits):
            train_w[f, s, torch.as_tensor(tr, device=device)] = 1
            val_m[f, s, torch.as_tensor(va, device=device)] = True
            split_ok[f, s] = True
    return dict(
        X=X,
        time=time,
        event=event,
        weight=weight,
        fmask=fmask,
        train_w=train_w,
        val_m=val_m,
        split_ok=split_ok,
        F=F,
        S=S,
        n=n,
        d=d,
    )


# ----------------------------------------------------------------------------- torch backend


def _grid_problems(
    F: int, S: int, G: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold, inner-split and grid-point index of each batched problem, ordered (fold, split, point)."""
    fi = torch.arange(F, device=device).repeat_interleave(S * G)
    si = torch.arange(S, device=device).repeat_interleave(G).repeat(F)
    gi = torch.arange(G, device=device).repeat(F * S)
    return fi, si, gi


def _inner_cv_grids(preps, risk, failed, P, fi, si, candidates) -> list[Grid]:
    """Each outer fold's :class:`~.selection.Grid`: the validation C-index of every (inner
    split, grid point) fit of the batch; failed fits score NaN."""
    F, S, G = P["F"], P["S"], len(candidates)
    score = _harrell_cv(risk, P["time"][fi], P["event"][fi], P["val_m"][fi, si])
    score = torch.where(failed, torch.full_like(score, torch.nan), score)
    score = score.view(F, S, G).cpu().numpy()
    return [Grid(list(candidates), score[f, : len(p.splits)]) for f, p in enumerate(preps)]


def _torch_coxph(preps, cfg, device, seed) -> list[FittedModel]:
    P = _pad(preps, device)
    F, S = P["F"], P["S"]
    alphas = [float(a) for a in cfg.coxph.alpha]
    G = len(alphas)
    fi, si, gi = _grid_problems(F, S, G, device)

    def solve(idx, alpha, init):
        return fit_cox_ridge(
            P["X"][fi[idx]],
            P["time"][fi[idx]],
            P["event"][fi[idx]],
            alpha,
            sample_weight=P["train_w"][fi[idx], si[idx]],
            feature_mask=P["fmask"][fi[idx]],
            n_iter=int(cfg.coxph.n_iter),
            tol=float(cfg.coxph.tol),
            init=init,
            device=device,
        )

    # a large ridge penalty shrinks the solution towards 0
    order = sorted(range(G), key=lambda k: -alphas[k])
    coef, failed = _warm_path(solve, gi, alphas, order, len(fi), P["d"], device)
    risk = torch.bmm(P["X"][fi], coef.unsqueeze(-1)).squeeze(-1)
    grids = _inner_cv_grids(preps, risk, failed, P, fi, si, [{"alpha": a} for a in alphas])
    return _select_and_refit("coxph", preps, P, grids, cfg, device, seed)


def _torch_fsvm(preps, cfg, device, seed) -> list[FittedModel]:
    P = _pad(preps, device)
    F, S = P["F"], P["S"]
    alphas = [float(a) for a in cfg.fsvm.alpha]
    G = len(alphas)
    ranks = _train_ranks(preps, P, seed, device)
    fi, si, gi = _grid_problems(F, S, G, device)

    def solve(idx, alpha, init):
        return fit_survival_svm(
            P["X"][fi[idx]],
            ranks[fi[idx]],
            P["event"][fi[idx]].to(DTYPE),
            alpha,
            sample_weight=P["train_w"][fi[idx], si[idx]],
            feature_mask=P["fmask"][fi[idx]],
            max_iter=int(cfg.fsvm.torch_max_iter),
            tol=float(cfg.fsvm.torch_tol),
            init=init,
            device=device,
        )

    # a small alpha weighs the ranking loss little: its solution is close to 0
    order = sorted(range(G), key=lambda k: alphas[k])
    coef, failed = _warm_path(solve, gi, alphas, order, len(fi), P["d"], device)
    risk = -torch.bmm(P["X"][fi], coef.unsqueeze(-1)).squeeze(-1)
    grids = _inner_cv_grids(preps, risk, failed, P, fi, si, [{"alpha": a} for a in alphas])
    return _select_and_refit("fsvm", preps, P, grids, cfg, device, seed)


def _warm_path(solve, gi, alphas, order, n_problems, d, device):
    """Every (fold, inner split, alpha) problem, one alpha after the other: ``(coef, failed)``.

    ``solve(idx, alpha, init)`` fits the problems ``idx`` (all inner splits of every fold,
    in the same order for each alpha) at ``alpha``, starting from ``init`` -- the solutions
    at the alpha before (a warm start: fewer Newton steps to the same minimiser). ``order``
    lists the alpha indices, from the easiest problems (closest to 0) on.
    """
    coef = torch.zeros(n_problems, d, dtype=DTYPE, device=device)
    failed = torch.zeros(n_problems, dtype=torch.bool, device=device)
    init = None
    for g in order:
        idx = torch.nonzero(gi == g).squeeze(1)
        res = solve(idx, alphas[g], init)
        coef[idx], failed[idx] = res.coef, res.failed
        init = torch.where(res.failed.unsqueeze(1), torch.zeros_like(res.coef), res.coef)
    return coef, failed


def _train_ranks(preps, P, seed, device) -> torch.Tensor:
    """``[F, n]`` survival ranks of each fold's training times (ties broken with ``seed``)."""
    ranks = torch.zeros(P["F"], P["n"], dtype=DTYPE, device=device)
    for f, p in enumerate(preps):
        ranks[f, : len(p.y_train)] = torch.as_tensor(
            survival_ranks(p.train_time, seed), dtype=DTYPE, device=device
        )
    return ranks


def _select_and_refit(model, preps, P, grids, cfg, device, seed) -> list[FittedModel]:
    """:func:`~.selection.select_and_refit` with a batched refit: the folds to (re)fit are
    solved on their whole training split at their penalty in one call."""
    ranks = _train_ranks(preps, P, seed, device) if model == "fsvm" else None

    def refit(folds, params, choices) -> list[Outcome]:
        alpha = np.array([float(p["alpha"]) for p in params])
        res = _refit_solve(model, P, np.array(folds, dtype=int), alpha, ranks, cfg, device)

        def build(j, f):
            p = preps[f]
            coef = res.coef[j, : p.X_train.shape[1]].cpu().numpy()
            if model == "coxph":
                return TorchCoxPH.from_coef(
                    coef,
                    p.X_train,
                    p.train_event,
                    p.train_time,
                    alpha=float(alpha[j]),
                    device=str(device),
                )
            return TorchFastSurvivalSVM.from_coef(
                coef, alpha=float(alpha[j]), random_state=seed, device=str(device)
            )

        return _outcomes(folds, res.failed, res.converged, build, "overflow or singular system")

    policy = RetryPolicy.from_config(cfg.retry, model)
    return select_and_refit(model, preps, grids, refit, policy)


def _outcomes(folds, failed, converged, build, failure: str, detail: str = "") -> list[Outcome]:
    """The :class:`~.selection.Outcome` of each fold of a batched refit: ``build(j, fold)``
    (the estimator of problem ``j``), flagged when it did not converge, or ``failure``."""
    out = []
    for j, f in enumerate(folds):
        if bool(failed[j]):
            out.append(Outcome(failure=failure))
            continue
        conv = bool(converged[j])
        out.append(Outcome(build(j, f), converged=conv, detail="" if conv else detail))
    return out


def _refit_solve(model, P, todo, alpha, ranks, cfg, device):
    """Fit the folds ``todo`` on their whole training split at ``alpha`` (one per fold), in one call."""
    idx = torch.as_tensor(todo, device=device)
    a = torch.as_tensor(alpha, dtype=DTYPE, device=device)
    if model == "coxph":
        return fit_cox_ridge(
            P["X"][idx],
            P["time"][idx],
            P["event"][idx],
            a,
            sample_weight=P["weight"][idx],
            feature_mask=P["fmask"][idx],
            n_iter=int(cfg.coxph.n_iter),
            tol=float(cfg.coxph.tol),
            device=device,
        )
    return fit_survival_svm(
        P["X"][idx],
        ranks[idx],
        P["event"][idx].to(DTYPE),
        a,
        sample_weight=P["weight"][idx],
        feature_mask=P["fmask"][idx],
        max_iter=int(cfg.fsvm.torch_max_iter),
        tol=float(cfg.fsvm.torch_tol),
        device=device,
    )


def _torch_coxnet(preps, cfg, device, seed) -> list[FittedModel]:
    """Coxnet on every fold at once: alpha grids, one batched path call, then a polish.

    1. the alpha path of each (fold, l1_ratio) on the whole training split (scikit-survival's
       grid: from the smallest alpha that zeroes every coefficient down to
       ``alpha_min_ratio`` times it);
    2. one batched, warm-started path solve of the training split and of every inner-CV
       training subset along that grid (loose tolerance: it only ranks alphas); the
       training-split paths also give scikit-survival's early stop of the path;
    3. the chosen (l1_ratio, alpha) of each fold re-solved to ``torch_tol`` from its path
       solution (:func:`_coxnet_polish`). Paths that fail and polishes that fail are retried
       under the retry policy of :mod:`.selection`.
    """
    P = _pad(preps, device)
    ratios = [float(r) for r in cfg.coxnet.l1_ratio]
    policy = RetryPolicy.from_config(cfg.retry, "coxnet")
    paths, grids = _coxnet_grids(preps, P, ratios, cfg, policy, device)
    refit = _coxnet_polish(preps, P, paths, len(ratios), cfg, device)
    return select_and_refit("coxnet", preps, grids, refit, policy)


def _coxnet_grids(preps, P, ratios, cfg, policy, device):
    """Steps 1 and 2 of :func:`_torch_coxnet` for every (fold, l1_ratio), under ``policy``
    (a failed path is rebuilt with a larger ``alpha_min_ratio``).

    Problem ``b = fold * R + ratio index``. Returns ``(paths, grids)``: per problem the
    alphas ``[k]`` and coefficients ``[k, p]`` of its training-split path (None if it
    failed), and each fold's :class:`~.selection.Grid` of points ``ratio * A + alpha index``.
    """
    c = cfg.coxnet
    F, R, A = P["F"], len(ratios), int(c.n_alphas)
    fi = torch.arange(F, device=device).repeat_interleave(R)
    ri = torch.as_tensor(ratios, dtype=DTYPE, device=device).repeat(F)

    def attempt(items, params) -> list[Outcome]:
        idx = torch.as_tensor(items, device=device)
        min_ratio = np.array([p["alpha_min_ratio"] for p in params])
        res, split_scores = _coxnet_solve_paths(P, fi[idx], ri[idx], min_ratio, cfg, device)
        out = []
        for j in range(len(items)):
            if bool(res.failed[j]):
                out.append(Outcome(failure="alpha path: overflow"))
                continue
            k = int(res.n_alphas[j])
            out.append(Outcome((res.alphas[j, :k], res.coef[j, :k], split_scores[j, :, :k])))
        return out

    start = [{"l1_ratio": r, "alpha_min_ratio": float(c.alpha_min_ratio)} for r in ratios]
    ends = policy.run("coxnet", start * F, attempt)
    paths = [e.value[:2] if e.status != "failed" else None for e in ends]
    grids = []
    for f, p in enumerate(preps):
        candidates: list[dict | None] = [None] * (R * A)
        scores = np.full((len(p.splits), R * A), np.nan)
        for r in range(R):
            e = ends[f * R + r]
            if e.status == "failed":
                continue
            alphas, _, split = e.value
            for k in range(len(alphas)):
                candidates[r * A + k] = {"l1_ratio": ratios[r], "alpha": float(alphas[k])}
            scores[:, r * A : r * A + len(alphas)] = split[: len(p.splits)]
        notes = [n for e in ends[f * R : f * R + R] for n in e.notes]
        problem = None if any(candidates) else "; ".join(notes) or "no alpha path"
        grids.append(Grid(candidates, scores, notes, problem))
    return paths, grids


def _coxnet_solve_paths(P, folds, l1_ratio, min_ratio, cfg, device):
    """One batched path solve of T (fold, l1_ratio) problems and their inner-CV subsets.

    Each problem's grid is scikit-survival's on its whole training split, down to its
    ``min_ratio``; the problems solved are the T training splits, then the T x S inner-CV
    training subsets, to the loose ``torch_cv_tol`` (the subsets only rank alphas).
    Returns the :class:`CoxnetPath` and the inner-CV Harrell's C, ``[T, S, A]``.
    """
    c = cfg.coxnet
    S, A, T = P["S"], int(c.n_alphas), len(folds)
    grid = torch.cat(
        [
            fit_coxnet_path(
                P["X"][folds[j : j + 1]],
                P["time"][folds[j : j + 1]],
                P["event"][folds[j : j + 1]],
                l1_ratio=l1_ratio[j : j + 1],
                n_alphas=A,
                alpha_min_ratio=float(min_ratio[j]),
                sample_weight=P["weight"][folds[j : j + 1]],
                feature_mask=P["fmask"][folds[j : j + 1]],
                grid_only=True,
                device=device,
            ).alphas
            for j in range(T)
        ]
    )  # [T, A]
    pf_ = torch.cat([folds, folds.repeat_interleave(S)])
    pr = torch.cat([l1_ratio, l1_ratio.repeat_interleave(S)])
    pg = torch.cat([grid, grid.repeat_interleave(S, 0)])
    si = torch.arange(S, device=device).repeat(T)
    weight = torch.cat([P["weight"][folds], P["train_w"][folds.repeat_interleave(S), si]])
    res = fit_coxnet_path(
        P["X"],
        P["time"][pf_],
        P["event"][pf_],
        l1_ratio=pr,
        alphas=pg,
        sample_weight=weight,
        feature_mask=P["fmask"][pf_],
        tol=float(c.torch_cv_tol),
        groups=pf_,
        max_iter=int(c.torch_max_iter),
        device=device,
    )
    return res, _coxnet_inner_cv_score(P, res, pf_, si, T, A)


def _coxnet_inner_cv_score(P, res, pf_, si, T: int, A: int) -> np.ndarray:
    """Validation C on each inner split of each of T paths, ``[T, S, A]``.

    ``res`` holds T training-split paths, then the T x S inner-CV paths of problems ``pf_``
    (fold index) and ``si`` (split index); failed paths score NaN.
    """
    S = P["S"]
    X = P["X"][pf_[T:]]
    risk = torch.einsum("bnp,bap->ban", X, res.coef[T:])  # [T*S, A, n]
    Bn = risk.shape[0]
    t = P["time"][pf_[T:]].unsqueeze(1).expand(-1, A, -1).reshape(Bn * A, -1)
    e = P["event"][pf_[T:]].unsqueeze(1).expand(-1, A, -1).reshape(Bn * A, -1)
    m = P["val_m"][pf_[T:], si].unsqueeze(1).expand(-1, A, -1).reshape(Bn * A, -1)
    sc = _harrell_cv(risk.reshape(Bn * A, -1), t, e, m).view(T, S, A)
    sc = torch.where(res.failed[T:].view(T, S, 1), torch.full_like(sc, torch.nan), sc)
    return sc.cpu().numpy()


def _coxnet_polish(preps, P, paths, R: int, cfg, device):
    """Step 3 of :func:`_torch_coxnet`, the ``refit`` of :func:`~.selection.select_and_refit`:
    the folds' (l1_ratio, alpha) re-solved to ``torch_tol`` from the path solution of their
    chosen point, in one call."""
    c = cfg.coxnet
    A = int(c.n_alphas)

    def refit(folds, params, choices) -> list[Outcome]:
        lf = torch.as_tensor(folds, device=device)
        alphas = torch.as_tensor([[p["alpha"]] for p in params], dtype=DTYPE, device=device)
        starts = [divmod(ch.index, A) for ch in choices]
        init = torch.stack([paths[f * R + r][1][k] for f, (r, k) in zip(folds, starts)])
        l1 = torch.as_tensor([p["l1_ratio"] for p in params], dtype=DTYPE, device=device)
        fin = fit_coxnet_path(
            P["X"][lf],
            P["time"][lf],
            P["event"][lf],
            l1_ratio=l1,
            alphas=alphas,
            sample_weight=P["weight"][lf],
            feature_mask=P["fmask"][lf],
            tol=float(c.torch_tol),
            init=init,
            max_iter=int(c.torch_max_iter),
            device=device,
        )

        def build(j, f):
            p = preps[f]
            return TorchCoxnet.from_path(
                fin.coef[j, :1, : p.X_train.shape[1]].cpu().numpy(),
                [params[j]["alpha"]],
                p.X_train,
                p.train_event,
                p.train_time,
                l1_ratio=params[j]["l1_ratio"],
                fit_baseline_model=True,
                device=str(device),
            )

        converged = fin.converged[:, 0]
        return _outcomes(folds, fin.failed, converged, build, "overflow", "reached torch_max_iter")

    return refit
