"""Every metric of a fold on every bootstrap replicate at once: weighted, vectorised forms.

A resample is a vector of patient multiplicities ``w``, and every metric is a linear or
quadratic form in ``w`` -- Harrell's and Uno's C are ``w^T A w / w^T D w`` over the
comparable pairs, the cumulative/dynamic AUC is the same at each time with the
Kaplan-Meier weights of the resampled test data, the Brier score is ``w^T m / w^T 1`` -- so
all B replicates of a fold are a few ``[B, n] @ [n, n]`` products (:func:`_score_fold`).
Part of :mod:`radiopath.evaluation.stats`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from radiopath.evaluation._cox import DTYPE
from radiopath.evaluation.bootstrap import FoldSetup
from radiopath.evaluation.config import METRICS, SURVIVAL_FUNCTION_MODELS
from radiopath.evaluation.torch_metrics import comparable_pairs

__all__ = ["horizon_metrics"]


def horizon_metrics(horizons: Sequence[float]) -> list[str]:
    """Metric names of the fixed horizons: ``auc@<h>`` and ``brier@<h>``."""
    return [f"{kind}@{h:g}" for h in horizons for kind in ("auc", "brier")]


def _has_metric(model: str, metric: str) -> bool:
    needs_survival = metric == "ibs" or metric.startswith("brier@")
    return model in SURVIVAL_FUNCTION_MODELS or not needs_survival


# ----------------------------------------------------------------------------- weighted metrics


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float64), dtype=DTYPE)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, torch.nan))


def _pair_scores(risk: torch.Tensor, tied_tol: float) -> torch.Tensor:
    """``[i, j]``: 1 if risk_i > risk_j, 1/2 if tied (within ``tied_tol``), else 0."""
    diff = risk.unsqueeze(1) - risk.unsqueeze(0)
    tie = diff.abs() <= tied_tol
    return torch.where(tie, torch.full_like(diff, 0.5), (diff > 0).to(DTYPE))


def _concordance(w, score, comp, a) -> torch.Tensor:
    """Σ_ij w_i w_j a_i comp_ij score_ij / Σ_ij w_i w_j a_i comp_ij for each row of ``w``."""
    pairs = comp.to(DTYPE) * a.unsqueeze(1)
    num = ((w @ (pairs * score)) * w).sum(1)
    den = ((w @ pairs) * w).sum(1)
    return _ratio(num, den)


def _weighted_km(w, time, event, at) -> torch.Tensor:
    """Kaplan-Meier survival of the weighted test data at the times ``at``: ``[B, len(at)]``."""
    u = torch.unique(time[event])
    d = w @ ((time.unsqueeze(1) == u.unsqueeze(0)) & event.unsqueeze(1)).to(DTYPE)
    r = w @ (time.unsqueeze(1) >= u.unsqueeze(0)).to(DTYPE)
    hazard = torch.where(d > 0, d / r.clamp_min(1e-300), torch.zeros_like(d))
    surv = torch.cat([torch.ones_like(hazard[:, :1]), torch.cumprod(1.0 - hazard, 1)], 1)
    idx = torch.searchsorted(u, at, right=True)
    return surv[:, idx]


def _cumulative_auc(w, score, time, event, ipcw, at) -> torch.Tensor:
    """Cumulative/dynamic AUC at ``at`` and its Kaplan-Meier-weighted mean: ``[B]``."""
    case = ((time.unsqueeze(1) <= at.unsqueeze(0)) & event.unsqueeze(1)).to(DTYPE)
    control = (time.unsqueeze(1) > at.unsqueeze(0)).to(DTYPE)
    x = w.unsqueeze(2) * (case * ipcw.unsqueeze(1)).unsqueeze(0)  # [B, n, T]
    y = w.unsqueeze(2) * control.unsqueeze(0)
    num = (x * torch.einsum("ij,bjt->bit", score, y)).sum(1)
    auc = _ratio(num, x.sum(1) * y.sum(1))  # [B, T]
    if at.numel() == 1:
        return auc[:, 0]
    s = _weighted_km(w, time, event, at)
    drop = torch.cat([torch.ones_like(s[:, :1]), s[:, :-1]], 1) - s
    terms = torch.where(drop == 0, torch.zeros_like(auc), auc * drop)
    return _ratio(terms.sum(1), 1.0 - s[:, -1])


def _brier(w, surv, time, event, g_time, g_at, at) -> torch.Tensor:
    """IPCW Brier score at each of ``at``: ``[B, T]``."""
    case = ((time.unsqueeze(1) <= at.unsqueeze(0)) & event.unsqueeze(1)).to(DTYPE)
    control = (time.unsqueeze(1) > at.unsqueeze(0)).to(DTYPE)
    inf = torch.full_like(g_time, torch.inf)
    g_time = torch.where(g_time == 0, inf, g_time)
    g_at = torch.where(g_at == 0, torch.full_like(g_at, torch.inf), g_at)
    m = surv**2 * case / g_time.unsqueeze(1) + (1.0 - surv) ** 2 * control / g_at.unsqueeze(0)
    return (w @ m) / w.sum(1, keepdim=True)


def _fold_tensors(fs: FoldSetup) -> dict:
    """Per-fold tensors shared by every model and replicate."""
    if fs._cache:
        return fs._cache
    c = fs._cache
    c["time"], c["event"] = _t(fs.time), torch.as_tensor(fs.event)
    c["time_eval"], c["event_eval"] = _t(fs.time_eval), torch.as_tensor(fs.event_eval)
    c["comp"], _ = comparable_pairs(c["event"], c["time"])
    ones = torch.ones(len(fs.time), dtype=DTYPE)
    c["a_harrell"] = ones
    # Uno's C: events before tau weighted by 1 / G(t_i)^2
    used = c["event"] & (c["time"] < fs.tau)
    g = torch.ones_like(ones)
    g[used] = fs.cens.predict_proba(fs.time[used.numpy()])
    inv = torch.where(g > 0, 1.0 / g.clamp_min(1e-300), torch.full_like(g, torch.inf))
    ipcw = torch.where(used, inv, torch.zeros_like(g))
    c["a_uno"] = ipcw**2
    c["uno_ok"] = bool(torch.isfinite(c["a_uno"]).all())
    # C-AUC / Brier: 1 / G at the follow-up-adjusted test times
    g_eval = fs.cens.predict_proba(fs.time_eval)
    c["g_eval"] = g_eval
    inv = torch.where(
        g_eval > 0, 1.0 / g_eval.clamp_min(1e-300), torch.full_like(g_eval, torch.inf)
    )
    c["ipcw_eval"] = torch.where(c["event_eval"], inv, torch.zeros_like(g_eval))
    c["auc_ok"] = bool(torch.isfinite(c["ipcw_eval"]).all())
    return c


def _horizon_ok(fs: FoldSetup, h: float) -> bool:
    """The protocol's rule for a time of C-AUC / Brier: inside the adjusted test follow-up."""
    return fs.problem is None and fs.time_eval.min() <= h < fs.time_eval.max()


def _score_fold(
    fs: FoldSetup,
    w: torch.Tensor,
    risk: np.ndarray,
    survival: Mapping[float, np.ndarray] | None,
    model: str,
    horizons: Sequence[float],
    tied_tol: float,
) -> dict[str, torch.Tensor]:
    """Every metric of one model on one fold for each row of ``w`` (``[B, n]``)."""
    nan = torch.full((w.shape[0],), torch.nan, dtype=DTYPE)
    out = {m: nan for m in METRICS if _has_metric(model, m)}
    out.update({m: nan for m in horizon_metrics(horizons) if _has_metric(model, m)})
    if fs.problem is not None or risk is None:
        return out
    c = _fold_tensors(fs)
    r = _t(risk)
    score = _pair_scores(r, tied_tol)
    out["c_index"] = _concordance(w, score, c["comp"], c["a_harrell"])
    if c["uno_ok"]:
        out["c_ipcw"] = _concordance(w, score, c["comp"], c["a_uno"])
    if fs.times is not None and c["auc_ok"]:
        out["c_auc"] = _cumulative_auc(
            w, score, c["time_eval"], c["event_eval"], c["ipcw_eval"], _t(fs.times)
        )
    survival = survival or {}
    if "ibs" in out and fs.times is not None and len(fs.times) >= 2:
        columns = [survival.get(float(t)) for t in fs.times]
        if all(col is not None for col in columns):
            at = _t(fs.times)
            bs = _brier(
                w,
                _t(np.column_stack(columns)),
                c["time_eval"],
                c["event_eval"],
                c["g_eval"],
                fs.cens.predict_proba(at),
                at,
            )
            out["ibs"] = torch.trapezoid(bs, at, dim=1) / (at[-1] - at[0])
    for h in horizons:
        if not _horizon_ok(fs, h):
            continue
        at = _t([h])
        if c["auc_ok"]:
            out[f"auc@{h:g}"] = _cumulative_auc(
                w, score, c["time_eval"], c["event_eval"], c["ipcw_eval"], at
            )
        col = survival.get(float(h))
        if f"brier@{h:g}" in out and col is not None:
            out[f"brier@{h:g}"] = _brier(
                w,
                _t(col).unsqueeze(1),
                c["time_eval"],
                c["event_eval"],
                c["g_eval"],
                fs.cens.predict_proba(at),
                at,
            )[:, 0]
    return out
