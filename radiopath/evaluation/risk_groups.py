"""High- and low-risk groups of test patients, their Kaplan-Meier curves and log-rank test.

Test patients are split at the mean (or median) training risk (Gao et al. 2025, Fig. 4):
:func:`km_risk_groups` for one fold, :func:`pooled_risk_groups` over all test folds of a
model. Part of :mod:`radiopath.evaluation.report`, which re-exports these names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test
from matplotlib.figure import Figure

from radiopath.errors import RadiopathInputError

log = logging.getLogger(__name__)

__all__ = ["RiskGroups", "km_risk_groups", "pooled_risk_groups"]


@dataclass
class RiskGroups:
    """High- and low-risk groups of test patients and their Kaplan-Meier estimates.

    Attributes
    ----------
    high
        ``[n]`` bool, True where the test risk exceeds ``threshold``.
    threshold
        The split point (mean or median of the training risk, or one per patient when
        pooled over folds).
    split
        ``"mean"`` or ``"median"``.
    p_value
        Log-rank test of high vs low (NaN when a group is empty).
    km_low, km_high
        Fitted ``lifelines.KaplanMeierFitter`` (None for an empty group).
    """

    high: np.ndarray
    threshold: np.ndarray | float
    split: str
    p_value: float
    km_low: KaplanMeierFitter | None
    km_high: KaplanMeierFitter | None

    def plot(self, ax=None, title: str | None = None) -> Figure:
        """Kaplan-Meier curves of the two groups with the log-rank p-value."""
        if ax is None:
            fig = Figure(figsize=(5, 4))
            ax = fig.add_subplot(1, 1, 1)
        else:
            fig = ax.figure
        for km, color in ((self.km_low, "tab:blue"), (self.km_high, "tab:red")):
            if km is not None:
                km.plot_survival_function(ax=ax, ci_show=True, color=color)
        ax.set_xlabel("time")
        ax.set_ylabel("survival probability")
        p = "n/a" if not np.isfinite(self.p_value) else f"{self.p_value:.2g}"
        ax.set_title(
            (title + "\n" if title else "")
            + f"split at the {self.split} training risk, log-rank p = {p}"
        )
        ax.set_ylim(0, 1.02)
        return fig


def _groups(high: np.ndarray, time, event, threshold, split: str) -> RiskGroups:
    time = np.asarray(time, dtype=float)
    event = np.asarray(event).astype(bool)
    km = {}
    for name, sel in (("low", ~high), ("high", high)):
        if sel.any():
            km[name] = KaplanMeierFitter(label=f"{name} risk (n={int(sel.sum())})").fit(
                time[sel], event[sel]
            )
        else:
            km[name] = None
    if high.any() and (~high).any():
        p = float(logrank_test(time[high], time[~high], event[high], event[~high]).p_value)
    else:
        p = float("nan")
        log.info("risk groups: one group is empty, no log-rank test")
    return RiskGroups(high, threshold, split, p, km["low"], km["high"])


def km_risk_groups(
    pred_train_risk, test_risk, time, event, split: str = "mean"
) -> tuple[RiskGroups, float]:
    """Split test patients at the mean (or median) training risk; KM curves and log-rank p.

    Parameters
    ----------
    pred_train_risk
        Risks the model predicts for its own training patients; the threshold is their
        mean (the paper's choice) or median.
    test_risk, time, event
        Test patients' risks and outcomes.
    split
        ``"mean"`` or ``"median"``.

    Returns
    -------
    groups : RiskGroups
        ``groups.plot()`` draws the figure.
    p_value : float
        Log-rank test between the groups (Mantel 1966), NaN if one group is empty.
    """
    if split not in ("mean", "median"):
        raise RadiopathInputError(f"split must be 'mean' or 'median', got {split!r}", field="split")
    train = np.asarray(pred_train_risk, dtype=float)
    threshold = float(np.mean(train) if split == "mean" else np.median(train))
    high = np.asarray(test_risk, dtype=float) > threshold
    g = _groups(high, time, event, threshold, split)
    return g, g.p_value


def pooled_risk_groups(
    predictions: pd.DataFrame, selection: pd.DataFrame, split: str = "mean"
) -> RiskGroups:
    """Risk groups over all test folds of one model, each fold split at its own training risk."""
    col = "train_risk_mean" if split == "mean" else "train_risk_median"
    thr = predictions.merge(
        selection[["aggregator", "modalities", "model", "fold", col]],
        on=["aggregator", "modalities", "model", "fold"],
        how="left",
    )[col].to_numpy()
    high = predictions["risk"].to_numpy() > thr
    return _groups(high, predictions["time"], predictions["event"], thr, split)
