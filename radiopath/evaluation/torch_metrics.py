"""Torch versions of scikit-survival's survival metrics, vectorised over all pairs.

Each function has the signature, the conventions and the error messages of its namesake in
``sksurv.metrics`` and agrees with it to floating-point rounding (tests check 1e-6):

* :func:`concordance_index_censored` -- Harrell's C (Harrell et al. 1996),
* :func:`concordance_index_ipcw` -- Uno's C with inverse probability of censoring weights
  (Uno et al. 2011, Stat Med 30(10)),
* :func:`cumulative_dynamic_auc` -- cumulative/dynamic AUC (Uno et al. 2007; Hung & Chiang
  2010), and its mean weighted by the Kaplan-Meier estimate of the test data,
* :func:`brier_score` and :func:`integrated_brier_score` (Graf et al. 1999).

Where scikit-survival loops over comparable pairs or ROC thresholds in Python, these form
the ``[n, n]`` pair matrices once; an ``estimate`` with a leading batch dimension
(``[K, n]``) is scored K times in one call (e.g. the random tie-breaking draws).
"""

from __future__ import annotations

import numpy as np
import torch
from sksurv.exceptions import NoComparablePairException
from sksurv.util import check_y_survival

from radiopath.evaluation._cox import DTYPE, as_tensor, resolve_device

__all__ = [
    "KaplanMeier",
    "brier_score",
    "comparable_pairs",
    "concordance_index_censored",
    "concordance_index_ipcw",
    "cumulative_dynamic_auc",
    "integrated_brier_score",
]


class KaplanMeier:
    """Kaplan-Meier estimator of survival, or of censoring with ``reverse=True``.

    Mirrors scikit-survival's ``SurvivalFunctionEstimator`` /
    ``CensoringDistributionEstimator``: the reverse estimator swaps the roles of events and
    censorings and removes the events at a time from its risk set,
    :math:`\\hat G(t) = \\prod_{s \\le t} (1 - c_s / (r_s - d_s))`, and ``predict_proba``
    is the value at the largest unique time ``<= t`` (1 before the first).
    """

    def __init__(self, event, time, *, reverse: bool = False, device="auto") -> None:
        device = resolve_device(device)
        self.device = device
        t = as_tensor(time, device)
        e = as_tensor(event, device)
        uniq, inverse = torch.unique(t, sorted=True, return_inverse=True)
        n_events = torch.zeros_like(uniq).index_add_(0, inverse, e)
        total = torch.zeros_like(uniq).index_add_(0, inverse, torch.ones_like(e))
        n_at_risk = t.numel() - torch.cumsum(torch.cat([total.new_zeros(1), total[:-1]]), 0)
        if reverse:
            if bool((e > 0).all()):
                # no censoring: G = 1 everywhere (scikit-survival keeps no -inf prefix here)
                self.unique_time = uniq
                self.prob = torch.ones_like(uniq)
                return
            n_at_risk = n_at_risk - n_events
            n_events = total - n_events
        ratio = torch.where(n_events != 0, n_events / n_at_risk, torch.zeros_like(n_events))
        prob = torch.cumprod(1.0 - ratio, 0)
        self.unique_time = torch.cat([uniq.new_full((1,), -torch.inf), uniq])
        self.prob = torch.cat([prob.new_ones(1), prob])

    def predict_proba(self, time) -> torch.Tensor:
        t = as_tensor(time, self.device)
        extends = t > self.unique_time[-1]
        if bool(self.prob[-1] > 0) and bool(extends.any()):
            raise ValueError(
                f"time must be smaller than largest observed time point: {float(self.unique_time[-1])}"
            )
        idx = torch.searchsorted(self.unique_time, t.clamp_max(self.unique_time[-1]))
        idx = idx.clamp_max(self.unique_time.numel() - 1)
        eps = float(np.finfo(np.float64).eps)
        exact = (self.unique_time[idx] - t).abs() < eps
        idx = torch.where(exact, idx, idx - 1)
        out = self.prob[idx]
        return torch.where(extends, torch.zeros_like(out), out)


def _check_inputs(event, time, estimate):
    event = np.asarray(event)
    time = np.asarray(time, dtype=np.float64)
    if not np.issubdtype(event.dtype, np.bool_):
        raise ValueError(
            f"only boolean arrays are supported as class labels for survival analysis, got {event.dtype}"
        )
    if len(time) < 2:
        raise ValueError("Need a minimum of two samples")
    if not event.any():
        raise ValueError("All samples are censored")
    est = estimate if isinstance(estimate, torch.Tensor) else np.asarray(estimate, dtype=np.float64)
    if est.shape[-1] != len(time) or len(event) != len(time):
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: {[len(event), len(time), est.shape[-1]]}"
        )
    return event, time, est


def comparable_pairs(e: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, n]`` comparable pairs of Harrell's C, and the (event i, censored j) time ties.

    (i, j) is comparable when i had the event and j was still at risk after t_i (or was
    censored at t_i). Never true on the diagonal.
    """
    later = t.unsqueeze(0) > t.unsqueeze(1)
    same_censored = (t.unsqueeze(0) == t.unsqueeze(1)) & ~e.unsqueeze(0)
    return e.unsqueeze(1) & (later | same_censored), same_censored


def _weighted_concordance(event, time, estimate, weights, tied_tol, device):
    """Σ_i w_i (concordant + ties/2) / Σ_i w_i |comparable(i)|, per row of ``estimate``."""
    e = torch.as_tensor(event, device=device)
    t = as_tensor(time, device)
    est = as_tensor(estimate, device)
    squeeze = est.dim() == 1
    if squeeze:
        est = est.unsqueeze(0)
    w = as_tensor(weights, device)
    comp, same_censored = comparable_pairs(e, t)
    if not bool(comp.any()):
        raise NoComparablePairException(
            "Data has no comparable pairs, cannot estimate concordance index."
        )
    diff = est.unsqueeze(1) - est.unsqueeze(2)  # [K, i, j] = est_j - est_i
    ties = (diff.abs() <= tied_tol) & comp
    con = (diff < 0) & comp & ~ties
    wi = w.view(1, -1, 1)
    numerator = (wi * (con.to(DTYPE) + 0.5 * ties.to(DTYPE))).sum((1, 2))
    denominator = (wi * comp.to(DTYPE)).sum((1, 2))
    cindex = numerator / denominator
    n_con = con.sum((1, 2))
    n_ties = ties.sum((1, 2))
    n_disc = comp.sum() - n_con - n_ties
    tied_time = int((e.unsqueeze(1) & same_censored).sum())
    if squeeze:
        return float(cindex[0]), int(n_con[0]), int(n_disc[0]), int(n_ties[0]), tied_time
    return cindex, n_con, n_disc, n_ties, tied_time


def concordance_index_censored(
    event_indicator, event_time, estimate, tied_tol: float = 1e-8, device="cpu"
):
    r"""Harrell's concordance index for right-censored data.

    .. math::

        C = \frac{\sum_{i,j} \delta_i\, \mathbb 1[t_i < t_j]\,
              (\mathbb 1[\hat\eta_i > \hat\eta_j] + \tfrac12 \mathbb 1[\hat\eta_i = \hat\eta_j])}
             {\sum_{i,j} \delta_i\, \mathbb 1[t_i < t_j]}

    (a censored j tied in time with an event i also counts as comparable; risks within
    ``tied_tol`` are ties).

    Returns
    -------
    cindex, concordant, discordant, tied_risk, tied_time
        As ``sksurv.metrics.concordance_index_censored``; with a ``[K, n]`` estimate, the
        first four are ``[K]`` tensors.
    """
    device = resolve_device(device)
    event, time, est = _check_inputs(event_indicator, event_time, estimate)
    return _weighted_concordance(event, time, est, np.ones(len(time)), tied_tol, device)


def _ipcw_weights(cens: KaplanMeier, event, time) -> torch.Tensor:
    g = cens.predict_proba(time[event])
    if bool((g == 0).any()):
        raise ValueError("censoring survival function is zero at one or more time points")
    w = torch.zeros(len(time), dtype=DTYPE, device=cens.device)
    w[torch.as_tensor(np.flatnonzero(event), device=cens.device)] = 1.0 / g
    return w


def concordance_index_ipcw(
    survival_train,
    survival_test,
    estimate,
    tau: float | None = None,
    tied_tol: float = 1e-8,
    device="cpu",
):
    r"""Uno's concordance index with inverse probability of censoring weights.

    .. math::

        C_\tau = \frac{\sum_{i,j} \delta_i \hat G(t_i)^{-2} \mathbb 1[t_i < t_j, t_i < \tau]
                 \mathbb 1[\hat\eta_i > \hat\eta_j]}
                {\sum_{i,j} \delta_i \hat G(t_i)^{-2} \mathbb 1[t_i < t_j, t_i < \tau]}

    with :math:`\hat G` the Kaplan-Meier estimate of the censoring distribution on
    ``survival_train``. Returns the tuple of :func:`concordance_index_censored`.
    """
    device = resolve_device(device)
    test_event, test_time = check_y_survival(survival_test)
    _, _, est = (
        _check_inputs(test_event, test_time, estimate) if test_event.any() else (0, 0, estimate)
    )
    train_event, train_time = check_y_survival(survival_train)
    cens = KaplanMeier(train_event, train_time, reverse=True, device=device)
    if tau is None:
        w = _ipcw_weights(cens, test_event, test_time)
    else:
        mask = test_time < tau
        w = torch.zeros(len(test_time), dtype=DTYPE, device=device)
        sub = _ipcw_weights(cens, test_event[mask], test_time[mask])
        w[torch.as_tensor(np.flatnonzero(mask), device=device)] = sub
    return _weighted_concordance(test_event, test_time, est, w * w, tied_tol, device)


def _check_times(test_time: np.ndarray, times) -> np.ndarray:
    times = np.unique(np.atleast_1d(np.asarray(times, dtype=np.float64)))
    if times.max() >= test_time.max() or times.min() < test_time.min():
        raise ValueError(
            f"all times must be within follow-up time of test data: [{test_time.min()}; {test_time.max()}["
        )
    return times


def cumulative_dynamic_auc(
    survival_train, survival_test, estimate, times, tied_tol: float = 1e-8, device="cpu"
):
    r"""Cumulative/dynamic AUC at each of ``times`` and its KM-weighted mean.

    .. math::

        \widehat{AUC}(t) = \frac{\sum_i \sum_j \mathbb 1[y_j > t]\, \mathbb 1[y_i \le t]\,
            \delta_i \hat G(y_i)^{-1}\, (\mathbb 1[\hat f_i > \hat f_j]
            + \tfrac12 \mathbb 1[\hat f_i = \hat f_j])}
            {(\sum_i \mathbb 1[y_i \le t] \delta_i \hat G(y_i)^{-1})
             (\sum_j \mathbb 1[y_j > t])}

    -- the weighted Mann-Whitney form of the trapezoidal ROC area that scikit-survival
    integrates. The mean is :math:`\sum_k AUC(t_k)(\hat S(t_{k-1}) - \hat S(t_k)) / (1 -
    \hat S(t_K))` with :math:`\hat S` the Kaplan-Meier estimate of the test data.

    Parameters
    ----------
    estimate
        ``[n]`` risk scores or ``[n, len(times)]`` time-dependent ones.

    Returns
    -------
    auc : ndarray, shape (n_times,)
    mean_auc : float
    """
    device = resolve_device(device)
    test_event, test_time = check_y_survival(survival_test)
    times = _check_times(test_time, times)
    est = as_tensor(estimate, device)
    n, T = len(test_time), len(times)
    if est.dim() == 1:
        est = est.unsqueeze(1).expand(n, T)
    if est.shape != (n, T):
        raise ValueError(f"expected estimate with {T} columns, but got {est.shape[1]}")
    train_event, train_time = check_y_survival(survival_train)
    cens = KaplanMeier(train_event, train_time, reverse=True, device=device)
    ipcw = _ipcw_weights(cens, test_event, test_time)
    t = as_tensor(test_time, device).unsqueeze(1)
    e = torch.as_tensor(test_event, device=device).unsqueeze(1)
    tt = as_tensor(times, device).unsqueeze(0)
    is_case = ((t <= tt) & e).to(DTYPE)  # [n, T]
    is_control = (t > tt).to(DTYPE)
    diff = est.unsqueeze(1) - est.unsqueeze(0)  # [i, j, T] = est_i - est_j
    ties = (diff.abs() <= tied_tol).to(DTYPE)
    above = (diff > 0).to(DTYPE) * (1 - ties)
    wcase = (is_case * ipcw.unsqueeze(1)).unsqueeze(1)  # [i, 1, T]
    ctrl = is_control.unsqueeze(0)  # [1, j, T]
    num = (wcase * ctrl * (above + 0.5 * ties)).sum((0, 1))
    den = (is_case * ipcw.unsqueeze(1)).sum(0) * is_control.sum(0)
    scores = (num / den).cpu().numpy()
    if T == 1:
        return scores, float(scores[0])
    km = KaplanMeier(test_event, test_time, device=device)
    s = km.predict_proba(times)
    d = -torch.diff(torch.cat([s.new_ones(1), s]))
    mean_auc = float((torch.as_tensor(scores, device=device) * d).sum() / (1.0 - s[-1]))
    return scores, mean_auc


def brier_score(survival_train, survival_test, estimate, times, device="cpu"):
    r"""Time-dependent Brier score with inverse probability of censoring weights.

    .. math::

        BS(t) = \frac1n \sum_i \Big[\frac{\hat S(t \mid x_i)^2\, \mathbb 1[y_i \le t,
        \delta_i = 1]}{\hat G(y_i)} + \frac{(1 - \hat S(t \mid x_i))^2\, \mathbb 1[y_i > t]}
        {\hat G(t)}\Big]

    Parameters
    ----------
    estimate
        ``[n, len(times)]`` predicted survival probabilities.

    Returns
    -------
    times : ndarray
    brier_scores : ndarray
    """
    device = resolve_device(device)
    test_event, test_time = check_y_survival(survival_test)
    times = _check_times(test_time, times)
    est = as_tensor(estimate, device)
    if est.dim() == 1 and times.shape[0] == 1:
        est = est.reshape(-1, 1)
    if est.shape[1] != times.shape[0]:
        raise ValueError(f"expected estimate with {times.shape[0]} columns, but got {est.shape[1]}")
    train_event, train_time = check_y_survival(survival_train)
    cens = KaplanMeier(train_event, train_time, reverse=True, device=device)
    g_t = cens.predict_proba(times)
    g_t = torch.where(g_t == 0, torch.full_like(g_t, torch.inf), g_t)
    g_y = cens.predict_proba(test_time)
    g_y = torch.where(g_y == 0, torch.full_like(g_y, torch.inf), g_y)
    t = as_tensor(test_time, device).unsqueeze(1)
    e = torch.as_tensor(test_event, device=device).unsqueeze(1)
    tt = as_tensor(times, device).unsqueeze(0)
    is_case = ((t <= tt) & e).to(DTYPE)
    is_control = (t > tt).to(DTYPE)
    bs = (
        est * est * is_case / g_y.unsqueeze(1) + (1.0 - est) ** 2 * is_control / g_t.unsqueeze(0)
    ).mean(0)
    return times, bs.cpu().numpy()


def integrated_brier_score(survival_train, survival_test, estimate, times, device="cpu") -> float:
    r"""Integrated Brier score: the trapezoidal integral of :func:`brier_score` over
    ``times``, divided by :math:`t_{max} - t_{min}`."""
    times, bs = brier_score(survival_train, survival_test, estimate, times, device=device)
    if times.shape[0] < 2:
        raise ValueError("At least two time points must be given")
    return float(np.trapezoid(bs, times) / (times[-1] - times[0]))
