"""Univariate Cox screening of embedding features (the paper's feature selection step).

Gao et al. (MICCAI 2025, Sec. 3.1) keep the features whose univariate Cox regression has a
p-value below 0.2 -- loose on purpose, so rare but important features survive -- and skip
the step for SPARRA, whose aggregation is already sparse. Here all p univariate models are
fitted at once: p independent one-parameter Newton problems over the same risk sets, with
Efron's handling of tied event times and Wald p-values, the choices of lifelines'
``CoxPHFitter`` (tests compare the two).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from radiopath.evaluation._cox import DTYPE, resolve_device

log = logging.getLogger(__name__)

__all__ = ["ScreeningResult", "select_features", "univariate_cox_pvalues"]


@dataclass
class ScreeningResult:
    """Univariate Cox fits of every feature.

    Attributes
    ----------
    coef, se, z, pvalue
        ``[p]`` log-hazard ratio per unit of the feature, its standard error (inverse
        observed information), the Wald statistic and its two-sided p-value.
    converged
        ``[p]`` whether Newton-Raphson converged (a feature that separates the events
        perfectly does not; its p-value is then that of the last iterate).
    """

    coef: np.ndarray
    se: np.ndarray
    z: np.ndarray
    pvalue: np.ndarray
    converged: np.ndarray


def univariate_cox_pvalues(
    X: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    *,
    max_iter: int = 50,
    tol: float = 1e-10,
    device="cpu",
) -> ScreeningResult:
    r"""Fit one Cox model per column of ``X`` and return Wald p-values.

    For feature :math:`x` and coefficient :math:`b`, with Efron's approximation for the
    :math:`d_k` events tied at time :math:`t_k` (Efron 1977),

    .. math::

        \ell(b) = \sum_i \delta_i b x_i - \sum_k \sum_{l=0}^{d_k - 1}
        \log\Big(S_0(t_k) - \frac{l}{d_k} A_0(t_k)\Big),

    where :math:`S_0(t_k)` sums :math:`e^{b x_j}` over the risk set and :math:`A_0(t_k)` over
    the events at :math:`t_k`. Newton-Raphson with step halving on all columns at once; the
    Wald statistic is :math:`z = \hat b / \mathrm{se}(\hat b)`,
    :math:`\mathrm{se} = (-\ell''(\hat b))^{-1/2}`, and :math:`p = 2\Phi(-|z|)`. Columns are
    standardised internally (the p-value does not depend on the scale); ``coef`` and ``se``
    are returned on the original scale. A constant column gets p = 1.
    """
    device = resolve_device(device)
    X = np.asarray(X, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    n, p = X.shape
    mean = X.mean(0)
    sd = X.std(0)
    constant = sd <= 1e-12 * np.maximum(1.0, np.abs(mean))
    sd_safe = np.where(constant, 1.0, sd)
    Z = (X - mean) / sd_safe

    b, info, converged = _newton_raphson(_EfronColumns(Z, time, event, device), max_iter, tol)
    b_np = b.cpu().numpy()
    info_np = info.cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        se_std = np.where(info_np > 0, 1.0 / np.sqrt(info_np), np.inf)
        z = b_np / se_std
    z = np.where(constant | ~np.isfinite(z), 0.0, z)
    pvalue = 2.0 * norm.sf(np.abs(z))
    pvalue[constant] = 1.0
    coef = np.where(constant, 0.0, b_np / sd_safe)
    se = np.where(constant, np.inf, se_std / sd_safe)
    n_bad = int((~converged.cpu().numpy() & ~constant).sum())
    if n_bad:
        log.info("univariate Cox screening: %d of %d features did not converge", n_bad, p)
    return ScreeningResult(coef, se, z, pvalue, converged.cpu().numpy() | constant)


class _EfronColumns:
    """Efron log-likelihood, gradient and information of one Cox model per column of ``Z``.

    The samples are sorted once by decreasing time, so each risk set is a prefix and each
    group of tied times a contiguous run; calling the object with ``b`` (``[p]``, one
    coefficient per column) returns ``(loglik, grad, info)``, each ``[p]``.
    """

    def __init__(self, Z: np.ndarray, time: np.ndarray, event: np.ndarray, device) -> None:
        order = np.argsort(-time, kind="mergesort")
        t = time[order]
        d = event[order].astype(np.float64)
        self.x = x = torch.as_tensor(Z[order], dtype=DTYPE, device=device)  # [n, p]
        self.dt = dt = torch.as_tensor(d, dtype=DTYPE, device=device)
        key = torch.as_tensor(-t, dtype=DTYPE, device=device)
        # tie groups are contiguous runs of the decreasing-time order: [start, end]
        end = torch.searchsorted(key, key, right=True) - 1
        start = torch.searchsorted(key, key, right=False)
        ev_idx = torch.nonzero(dt > 0).squeeze(1)
        self.ev_end, self.ev_start = ev_end, ev_start = end[ev_idx], start[ev_idx]
        # l = position of each event among the events of its tie group, d_k = their number
        n_ev_cum = torch.cumsum(dt, 0)
        before = torch.where(
            ev_start > 0,
            n_ev_cum[(ev_start - 1).clamp_min(0)],
            torch.zeros_like(ev_start, dtype=DTYPE),
        )
        d_k = n_ev_cum[ev_end] - before
        ell = n_ev_cum[ev_idx] - 1 - before
        self.frac = (ell / d_k).unsqueeze(1)  # [m, 1]
        self.sum_dx = x[ev_idx].sum(0)
        self.zero_row = torch.zeros(1, x.shape[1], dtype=DTYPE, device=device)

    def _tied(self, v: torch.Tensor) -> torch.Tensor:
        """Sum of ``v`` over the events of each event's tie group."""
        cs = torch.cat([self.zero_row, torch.cumsum(self.dt.unsqueeze(1) * v, 0)])
        return cs[self.ev_end + 1] - cs[self.ev_start]

    def __call__(self, b: torch.Tensor):
        x, ev_end, frac = self.x, self.ev_end, self.frac
        eta = x * b
        shift = eta.amax(0, keepdim=True)
        w = torch.exp(eta - shift)
        wx, wxx = w * x, w * x * x
        s0 = torch.cumsum(w, 0)[ev_end]
        s1 = torch.cumsum(wx, 0)[ev_end]
        s2 = torch.cumsum(wxx, 0)[ev_end]
        a0, a1, a2 = self._tied(w), self._tied(wx), self._tied(wxx)
        phi = s0 - frac * a0
        m1 = (s1 - frac * a1) / phi
        loglik = (b * self.sum_dx) - (torch.log(phi) + shift).sum(0)
        grad = self.sum_dx - m1.sum(0)
        info = ((s2 - frac * a2) / phi - m1 * m1).sum(0)
        return loglik, grad, info


def _newton_raphson(parts: _EfronColumns, max_iter: int, tol: float):
    """Maximise every column's log-likelihood from 0, halving steps that lower it.

    A column stops once its step is below ``tol`` relative to 1 + |b|. Returns ``(b, info,
    converged)``, each ``[p]``, ``info`` at the last iterate.
    """
    p = parts.x.shape[1]
    b = torch.zeros(p, dtype=DTYPE, device=parts.x.device)
    loglik, grad, info = parts(b)
    converged = torch.zeros(p, dtype=torch.bool, device=parts.x.device)
    for _ in range(max_iter):
        step = torch.where(info > 0, grad / info, torch.zeros_like(grad))
        step = torch.where(converged, torch.zeros_like(step), step)
        scale = torch.ones_like(b)
        new_b = b + step
        new_ll, _, _ = parts(new_b)
        for _ in range(30):
            worse = ~(new_ll >= loglik - 1e-12 * loglik.abs()) & ~converged
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale * 0.5, scale)
            new_b = b + scale * step
            new_ll, _, _ = parts(new_b)
        converged |= (scale * step).abs() < tol * (1 + b.abs())
        b = new_b
        loglik, grad, info = parts(b)
        if bool(converged.all()):
            break
    return b, info, converged


def select_features(
    pvalue: np.ndarray, threshold: float = 0.2, min_features: int = 1
) -> np.ndarray:
    """Indices of features with ``pvalue < threshold``, at least the ``min_features`` best.

    Returns the indices sorted ascending.
    """
    pvalue = np.asarray(pvalue, dtype=np.float64)
    keep = np.flatnonzero(pvalue < threshold)
    if keep.size < min_features:
        best = np.argsort(pvalue, kind="mergesort")[: min(min_features, pvalue.size)]
        keep = np.union1d(keep, best)
    return np.sort(keep)
