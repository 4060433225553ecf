"""What a linear model can reach on a synthetic cohort: the ceilings written beside its truth.

:func:`cross_validated_cox_c` is the yardstick (a ridge Cox model under event-stratified
k-fold cross-validation, its penalty chosen by inner cross-validation);
:func:`cohort_ceilings` applies it to the per-patient summaries
:func:`radiopath.datasets.make_synthetic_cohort` collects (``ceilings.json``).
"""

from __future__ import annotations

import numpy as np

MODALITIES = ("wsi", "ct")


CEILING_ALPHAS = (1.0, 10.0, 100.0, 1000.0)


def cross_validated_cox_c(
    features: np.ndarray,
    time,
    event,
    *,
    folds: int = 5,
    alphas=CEILING_ALPHAS,
    seed: int = 0,
) -> float:
    """Mean test C-index of a ridge Cox model (:class:`sksurv.linear_model.CoxPHSurvivalAnalysis`)
    on standardised ``features`` over ``folds`` event-stratified folds, its penalty chosen
    among ``alphas`` by 3-fold inner cross-validation of the training fold.

    Missing rows (NaN, e.g. a missing modality) are filled with the training fold's column
    means. This is the yardstick of the cohort's ceilings: what a linear model reaches from
    a given per-patient summary.
    """
    from sklearn.model_selection import StratifiedKFold
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    from radiopath.training.predict import c_index

    time, event = np.asarray(time, float), np.asarray(event, bool)
    y = Surv.from_arrays(event, time)
    folds = min(folds, int(np.bincount(event.astype(int), minlength=2).min()) // 2)
    if folds < 2:  # too few events (or censored patients) to cross-validate
        return float("nan")

    def fit_score(x, train, test, alpha):
        mu = np.nanmean(x[train], 0)
        x = np.where(np.isnan(x), mu, x)
        x = (x - mu) / (x[train].std(0) + 1e-8)
        model = CoxPHSurvivalAnalysis(alpha=alpha).fit(x[train], y[train])
        if not event[test].any():
            return np.nan
        return c_index(time[test], event[test], model.predict(x[test]))

    scores = []
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
    inner = StratifiedKFold(3, shuffle=True, random_state=seed + 1)
    for train, test in outer.split(features, event):
        inner_c = [
            np.nanmean(
                [
                    fit_score(features, train[a], train[b], alpha)
                    for a, b in inner.split(train, event[train])
                ]
            )
            for alpha in alphas
        ]
        alpha = alphas[int(np.nanargmax(inner_c))]
        scores.append(fit_score(features, train, test, alpha))
    return float(np.nanmean(scores))


def _joined(per_modality: dict[str, np.ndarray], cfg) -> np.ndarray:
    """The per-patient summaries of the modalities that carry the signal, side by side."""
    keep = [m for m in MODALITIES if cfg.signal in (m, "both", "split")]
    return np.concatenate([per_modality[m] for m in keep], 1)


def cohort_ceilings(time, event, eta, region_mean, bag_mean, rows, cfg) -> dict:
    """``ceilings.json``: the C-index of the true risk, and 5-fold ridge-Cox C-indices on the
    planted regions' mean and on the bag mean (plus, with a clinical factor, on its marker
    alone and on the regions' mean with the marker)."""
    from radiopath.training.predict import c_index

    regions = _joined(region_mean, cfg)
    ceilings = {
        "true_risk": c_index(time, event, eta),
        "oracle_region_mean": cross_validated_cox_c(regions, time, event),
        "mean_pooling": cross_validated_cox_c(_joined(bag_mean, cfg), time, event),
    }
    if cfg.clinical_effect > 0:
        marker = np.array([[r["marker"]] for r in rows], dtype=float)
        ceilings["clinical_marker"] = cross_validated_cox_c(marker, time, event)
        both = np.concatenate([regions, marker], 1)
        ceilings["oracle_region_mean_and_marker"] = cross_validated_cox_c(both, time, event)
    ceilings["folds"] = 5
    ceilings["note"] = (
        "C-index of the true linear predictor; 5-fold ridge-Cox C-index (mean over folds) on "
        "the planted regions' mean and on the bag mean of the signal modalities"
    )
    return ceilings
