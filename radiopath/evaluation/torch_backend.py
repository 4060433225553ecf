"""The batched torch backend of the protocol: CoxPH, FSVM and Coxnet on every fold at once.

All inner folds x grid points x outer folds of a model are solved in one batched call of the
solvers in :mod:`radiopath.evaluation.torch_models`, on folds padded to a common size
(:func:`_pad`); the inner-CV Harrell's C picks each fold's penalty, which is then refit on the
whole training split (batched again, with retries).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from radiopath.evaluation._cox import DTYPE
from radiopath.evaluation.fitting import FittedModel, _failed, _finish, _select
from radiopath.evaluation.prepare import PreparedFold
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


def _mean_cv(scores: torch.Tensor, ok: torch.Tensor) -> np.ndarray:
    """Mean over inner splits, ignoring NaN and absent splits: ``[F, S, G]`` -> ``[F, G]``."""
    s = torch.where(ok.unsqueeze(-1), scores, torch.full_like(scores, torch.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(s.cpu().numpy(), axis=1)


def _grid_problems(
    F: int, S: int, G: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold, inner-split and grid-point index of each batched problem, ordered (fold, split, point)."""
    fi = torch.arange(F, device=device).repeat_interleave(S * G)
    si = torch.arange(S, device=device).repeat_interleave(G).repeat(F)
    gi = torch.arange(G, device=device).repeat(F * S)
    return fi, si, gi


def _choose_by_inner_cv(risk, failed, P, fi, si, alphas, fallback) -> list[tuple[float, float]]:
    """Per outer fold, the grid value with the best mean validation C-index, and that score.

    Failed fits score NaN; a fold where every fit failed falls back to ``fallback`` (the
    most penalised value).
    """
    F, S, G = P["F"], P["S"], len(alphas)
    score = _harrell_cv(risk, P["time"][fi], P["event"][fi], P["val_m"][fi, si])
    score = torch.where(failed, torch.full_like(score, torch.nan), score)
    mean = _mean_cv(score.view(F, S, G), P["split_ok"])
    chosen = []
    for f in range(F):
        best, cv = _select(mean[f])
        chosen.append((alphas[best] if best >= 0 else fallback, cv))
    return chosen


def _torch_coxph(preps, cfg, device, seed) -> list[FittedModel]:
    P = _pad(preps, device)
    F, S = P["F"], P["S"]
    alphas = [float(a) for a in cfg["coxph"]["alpha"]]
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
            n_iter=int(cfg["coxph"]["n_iter"]),
            tol=float(cfg["coxph"]["tol"]),
            init=init,
            device=device,
        )

    # a large ridge penalty shrinks the solution towards 0
    order = sorted(range(G), key=lambda k: -alphas[k])
    coef, failed = _warm_path(solve, gi, alphas, order, len(fi), P["d"], device)
    risk = torch.bmm(P["X"][fi], coef.unsqueeze(-1)).squeeze(-1)
    chosen = _choose_by_inner_cv(risk, failed, P, fi, si, alphas, fallback=max(alphas))
    return _torch_refit("coxph", preps, P, chosen, cfg, device, seed)


def _torch_fsvm(preps, cfg, device, seed) -> list[FittedModel]:
    P = _pad(preps, device)
    F, S = P["F"], P["S"]
    alphas = [float(a) for a in cfg["fsvm"]["alpha"]]
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
            max_iter=int(cfg["fsvm"]["torch_max_iter"]),
            tol=float(cfg["fsvm"]["torch_tol"]),
            init=init,
            device=device,
        )

    # a small alpha weighs the ranking loss little: its solution is close to 0
    order = sorted(range(G), key=lambda k: alphas[k])
    coef, failed = _warm_path(solve, gi, alphas, order, len(fi), P["d"], device)
    risk = -torch.bmm(P["X"][fi], coef.unsqueeze(-1)).squeeze(-1)
    chosen = _choose_by_inner_cv(risk, failed, P, fi, si, alphas, fallback=min(alphas))
    return _torch_refit("fsvm", preps, P, chosen, cfg, device, seed)


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


def _torch_refit(model, preps, P, chosen, cfg, device, seed) -> list[FittedModel]:
    """Refit each fold at its chosen penalty on the whole training split, batched; retry failures."""
    F = P["F"]
    retry = cfg["retry"]
    factor = float(retry["factor"])
    alpha = np.array([c[0] for c in chosen], dtype=float)
    notes: list[list[str]] = [[] for _ in range(F)]
    todo = np.arange(F)
    coef = [None] * F
    status = ["ok"] * F
    ranks = _train_ranks(preps, P, seed, device) if model == "fsvm" else None
    for attempt in range(int(retry["max_retries"]) + 1):
        if todo.size == 0:
            break
        res = _refit_solve(model, P, todo, alpha, ranks, cfg, device)
        again = []
        for j, f in enumerate(todo):
            failed, conv = bool(res.failed[j]), bool(res.converged[j])
            if failed or not conv:
                what = "overflow or singular system" if failed else "did not converge"
                notes[f].append(f"alpha={alpha[f]:.4g}: {what}")
                if attempt < int(retry["max_retries"]):
                    alpha[f] = (
                        max(alpha[f] * factor, 1e-2) if model == "coxph" else alpha[f] / factor
                    )
                    again.append(f)
                    continue
                if failed:
                    coef[f] = None
                    status[f] = "failed"
                    continue
                status[f] = "not_converged"
            elif notes[f]:
                status[f] = "retried"
                notes[f].append(f"refit with alpha={alpha[f]:.4g}")
            q = preps[f].X_train.shape[1]
            coef[f] = res.coef[j, :q].cpu().numpy()
        todo = np.array(again, dtype=int)
    out = []
    for f, p in enumerate(preps):
        params = {"alpha": float(alpha[f])}
        if coef[f] is None:
            out.append(_failed(model, p, params, chosen[f][1], "; ".join(notes[f])))
            continue
        if model == "coxph":
            est = TorchCoxPH.from_coef(
                coef[f],
                p.X_train,
                p.train_event,
                p.train_time,
                alpha=float(alpha[f]),
                device=str(device),
            )
        else:
            est = TorchFastSurvivalSVM.from_coef(
                coef[f], alpha=float(alpha[f]), random_state=seed, device=str(device)
            )
        out.append(_finish(model, p, est, params, chosen[f][1], status[f], "; ".join(notes[f])))
    return out


def _refit_solve(model, P, todo, alpha, ranks, cfg, device):
    """Fit the folds ``todo`` on their whole training split at their ``alpha``, in one call."""
    idx = torch.as_tensor(todo, device=device)
    a = torch.as_tensor(alpha[todo], dtype=DTYPE, device=device)
    if model == "coxph":
        return fit_cox_ridge(
            P["X"][idx],
            P["time"][idx],
            P["event"][idx],
            a,
            sample_weight=P["weight"][idx],
            feature_mask=P["fmask"][idx],
            n_iter=int(cfg["coxph"]["n_iter"]),
            tol=float(cfg["coxph"]["tol"]),
            device=device,
        )
    return fit_survival_svm(
        P["X"][idx],
        ranks[idx],
        P["event"][idx].to(DTYPE),
        a,
        sample_weight=P["weight"][idx],
        feature_mask=P["fmask"][idx],
        max_iter=int(cfg["fsvm"]["torch_max_iter"]),
        tol=float(cfg["fsvm"]["torch_tol"]),
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
       solution. A path that fails is retried with a larger ``alpha_min_ratio``.
    """
    c = cfg["coxnet"]
    P = _pad(preps, device)
    F = P["F"]
    ratios = [float(r) for r in c["l1_ratio"]]
    paths, scores, notes = _coxnet_cv_paths(P, ratios, cfg, device)
    chosen = _choose_coxnet(scores, paths, len(ratios), int(c["n_alphas"]))
    out = _polish_coxnet(preps, P, chosen, paths, ratios, notes, cfg, device)
    for f in range(F):
        if out[f] is None:
            out[f] = _failed(
                "coxnet", preps[f], {}, float("nan"), "; ".join(notes[f]) or "no alpha path"
            )
    return out


def _coxnet_cv_paths(P, ratios, cfg, device):
    """Steps 1 and 2 of :func:`_torch_coxnet` for every (fold, l1_ratio), retrying failed paths.

    Problem ``b = fold * R + ratio index``. Returns ``(paths, scores, notes)``: per problem
    the alphas ``[k]`` and coefficients ``[k, p]`` of its training-split path (None if it
    failed), the mean inner-CV C ``[F, R, A]``, and per fold the retry notes.
    """
    c, retry = cfg["coxnet"], cfg["retry"]
    F, R, A = P["F"], len(ratios), int(c["n_alphas"])
    fi = torch.arange(F, device=device).repeat_interleave(R)
    ri = torch.as_tensor(ratios, dtype=DTYPE, device=device).repeat(F)
    min_ratio = np.full(F * R, float(c["alpha_min_ratio"]))
    notes = [[] for _ in range(F)]
    paths: list = [None] * (F * R)  # (alphas [k], coefs [k, p]) of the training split
    scores = np.full((F, R, A), np.nan)
    todo = np.arange(F * R)
    for attempt in range(int(retry["max_retries"]) + 1):
        if todo.size == 0:
            break
        idx = torch.as_tensor(todo, device=device)
        res, mean = _coxnet_solve_paths(P, fi[idx], ri[idx], min_ratio[todo], cfg, device)
        again = []
        for j, b in enumerate(todo):
            if bool(res.failed[j]):
                notes[b // R].append(
                    f"l1_ratio={ratios[b % R]}: path failed at alpha_min_ratio={min_ratio[b]:.3g}"
                )
                if attempt < int(retry["max_retries"]):
                    min_ratio[b] = min(min_ratio[b] * float(retry["factor"]), 0.5)
                    again.append(b)
                continue
            k = int(res.n_alphas[j])
            paths[b] = (res.alphas[j, :k], res.coef[j, :k])
            scores[b // R, b % R, :k] = mean[j, :k]
        todo = np.array(again, dtype=int)
    return paths, scores, notes


def _coxnet_solve_paths(P, folds, l1_ratio, min_ratio, cfg, device):
    """One batched path solve of T (fold, l1_ratio) problems and their inner-CV subsets.

    Each problem's grid is scikit-survival's on its whole training split, down to its
    ``min_ratio``; the problems solved are the T training splits, then the T x S inner-CV
    training subsets, to the loose ``torch_cv_tol`` (the subsets only rank alphas).
    Returns the :class:`CoxnetPath` and the mean inner-CV Harrell's C, ``[T, A]``.
    """
    c = cfg["coxnet"]
    S, A, T = P["S"], int(c["n_alphas"]), len(folds)
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
        tol=float(c["torch_cv_tol"]),
        groups=pf_,
        max_iter=int(c["torch_max_iter"]),
        device=device,
    )
    return res, _coxnet_inner_cv_score(P, res, pf_, si, T, A)


def _coxnet_inner_cv_score(P, res, pf_, si, T: int, A: int) -> np.ndarray:
    """Mean validation C over the inner splits of each of T paths, ``[T, A]``.

    ``res`` holds T training-split paths, then the T x S inner-CV paths of problems ``pf_``
    (fold index) and ``si`` (split index); failed paths and unusable splits score NaN.
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
    ok = P["split_ok"][pf_[:T]].unsqueeze(-1).expand(-1, -1, A)
    sc = torch.where(ok, sc, torch.full_like(sc, torch.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(sc.cpu().numpy(), axis=1)


def _choose_coxnet(scores, paths, R: int, A: int) -> list:
    """Per fold ``(problem, alpha index, cv score)`` with the best mean inner-CV C, or None.

    A fold whose paths all scored NaN takes the largest alpha of its first path that did
    not fail (the most penalised model); a fold with no path at all gets None.
    """
    chosen = []
    for f in range(scores.shape[0]):
        best, cv = _select(scores[f].reshape(-1))
        if best < 0:
            alive = [b for b in range(f * R, f * R + R) if paths[b] is not None]
            if not alive:
                chosen.append(None)
                continue
            b, k = alive[0], 0
        else:
            r_idx, k = divmod(best, A)
            b = f * R + r_idx
        chosen.append((b, k, cv))
    return chosen


def _polish_coxnet(preps, P, chosen, paths, ratios, notes, cfg, device) -> list:
    """Step 3 of :func:`_torch_coxnet`: each chosen (l1_ratio, alpha) re-solved to
    ``torch_tol`` from its path solution, in one call; None for folds with nothing chosen."""
    c = cfg["coxnet"]
    R = len(ratios)
    live = [f for f in range(P["F"]) if chosen[f] is not None]
    out: list[FittedModel | None] = [None] * P["F"]
    if not live:
        return out
    lf = torch.as_tensor(live, device=device)
    alphas = torch.stack([paths[chosen[f][0]][0][chosen[f][1]] for f in live]).view(-1, 1)
    init = torch.stack([paths[chosen[f][0]][1][chosen[f][1]] for f in live])
    l1 = torch.as_tensor([ratios[chosen[f][0] % R] for f in live], dtype=DTYPE, device=device)
    fin = fit_coxnet_path(
        P["X"][lf],
        P["time"][lf],
        P["event"][lf],
        l1_ratio=l1,
        alphas=alphas,
        sample_weight=P["weight"][lf],
        feature_mask=P["fmask"][lf],
        tol=float(c["torch_tol"]),
        init=init,
        max_iter=int(c["torch_max_iter"]),
        device=device,
    )
    for j, f in enumerate(live):
        p = preps[f]
        b, k, cv = chosen[f]
        q = p.X_train.shape[1]
        alpha = float(alphas[j, 0])
        params = {"l1_ratio": ratios[b % R], "alpha": alpha}
        if bool(fin.failed[j]):
            out[f] = _failed(
                "coxnet", p, params, cv, "; ".join([*notes[f], f"alpha={alpha:.4g}: overflow"])
            )
            continue
        est = TorchCoxnet.from_path(
            fin.coef[j, :1, :q].cpu().numpy(),
            [alpha],
            p.X_train,
            p.train_event,
            p.train_time,
            l1_ratio=ratios[b % R],
            fit_baseline_model=True,
            device=str(device),
        )
        status = "ok" if bool(fin.converged[j, 0]) else "not_converged"
        msg = list(notes[f])
        if status == "not_converged":
            msg.append(f"alpha={alpha:.4g} reached torch_max_iter")
        elif msg:
            status = "retried"
        out[f] = _finish("coxnet", p, est, params, cv, status, "; ".join(msg))
    return out
