"""Synthetic per-fold patient embeddings with a planted prognostic signal.

For tests and benchmarks of the downstream protocol without training an aggregator: ``P``
patients with ``d``-dimensional embeddings, a few of whose dimensions drive an exponential
proportional-hazards model (log-hazard ratio ``effect`` per standard deviation of the
linear predictor), independent exponential censoring, and a stratified outer K-fold split
written as :class:`~radiopath.io.FoldEmbeddings`, exactly what training hands over.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from radiopath.io import FoldEmbeddings

__all__ = ["make_fold_embeddings"]


def make_fold_embeddings(
    n_patients: int = 205,
    dim: int = 256,
    *,
    n_folds: int = 5,
    n_informative: int = 8,
    effect: float = 1.0,
    censoring: float = 0.4,
    tie_decimals: int | None = None,
    seed: int = 0,
) -> tuple[list[FoldEmbeddings], np.ndarray]:
    """Make K outer folds of synthetic embeddings.

    Parameters
    ----------
    n_patients, dim
        Cohort size and embedding width (the paper: 205 patients, 164 / 41 per fold).
    n_informative
        Leading dimensions that carry the signal (their sum, standardised, is the true
        linear predictor).
    effect
        Log-hazard ratio per standard deviation of the true linear predictor.
    censoring
        Approximate censored fraction.
    tie_decimals
        Round times to this many decimals to create ties.

    Returns
    -------
    folds : list of FoldEmbeddings
    true_risk : ndarray, shape (n_patients,)
        The planted linear predictor, in patient order.
    """
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_patients, dim))
    lp = X[:, :n_informative].sum(1)
    lp = effect * (lp - lp.mean()) / lp.std()
    t_event = rng.exponential(np.exp(-lp))
    # censoring rate chosen so that about `censoring` of patients are censored
    rate = censoring / max(1e-9, 1.0 - censoring)
    t_cens = rng.exponential(1.0 / max(rate, 1e-9), size=n_patients) * np.exp(-lp).mean()
    time = np.minimum(t_event, t_cens) + 1e-3
    if tie_decimals is not None:
        time = np.maximum(np.round(time, tie_decimals), 10.0**-tie_decimals)
    event = (t_event <= t_cens).astype(np.int64)
    ids = np.array([f"P{i:04d}" for i in range(n_patients)])
    folds = []
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, te) in enumerate(cv.split(X, event)):
        split = np.full(n_patients, "train", dtype=object)
        split[te] = "test"
        folds.append(
            FoldEmbeddings(
                fold=k,
                patient_id=ids.copy(),
                split=split.astype(str),
                time=time.copy(),
                event=event.copy(),
                embedding=X.astype(np.float32),
                risk=lp.copy(),
            )
        )
    return folds, lp
