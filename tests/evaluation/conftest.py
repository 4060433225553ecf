"""Shared data for the evaluation tests: scikit-survival's data sets and small synthetic folds."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.datasets import load_gbsg2, load_veterans_lung_cancer, load_whas500
from sksurv.preprocessing import OneHotEncoder
from sksurv.util import Surv

from radiopath.evaluation.synthetic import make_fold_embeddings

LOADERS = {"whas500": load_whas500, "gbsg2": load_gbsg2, "veterans": load_veterans_lung_cancer}

# tiny grids so that the protocol tests stay fast
_FAST_CONFIG = {
    "rsf": {"n_estimators": 10, "max_depth": [2, 4], "n_jobs": 1},
    "coxph": {"alpha": [1.0, 100.0]},
    "coxnet": {"l1_ratio": [0.5], "n_alphas": 6},
    "fsvm": {"alpha": [2.0**-8, 2.0**-2]},
    "metrics": {"random_tie_draws": 20},
}


def load_dataset(name: str):
    """Features one-hot encoded (categorical columns) and standardised, plus the survival array."""
    X, y = LOADERS[name]()
    X = OneHotEncoder().fit_transform(X).astype(float)
    X = (X - X.mean()) / X.std()
    event_field, time_field = y.dtype.names
    return X.to_numpy(), Surv.from_arrays(y[event_field], y[time_field]), list(X.columns)


@pytest.fixture(scope="session", params=sorted(LOADERS))
def dataset(request):
    return (request.param, *load_dataset(request.param))


@pytest.fixture(scope="session")
def whas500_split():
    """whas500's continuous features (age, BMI, blood pressures, ...: tied split statistics,
    which two implementations may break differently, are rare), the first 350 patients to
    train on and the other 150 to test."""
    X, y, _ = load_dataset("whas500")
    X = X[:, [j for j in range(X.shape[1]) if len(np.unique(X[:, j])) > 10]]
    return X[:350], y[:350], X[350:], y[350:]


@pytest.fixture(scope="session")
def small_folds():
    """3 outer folds, 90 patients, 12 features of which 4 carry a strong signal."""
    folds, lp = make_fold_embeddings(90, 12, n_folds=3, n_informative=4, effect=1.5, seed=1)
    return folds, lp


def _split_within_follow_up(y: np.ndarray, seed: int = 0, frac: float = 0.7):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    cut = int(frac * len(y))
    tr, te = idx[:cut], idx[cut:]
    te = te[y["time"][te] < y["time"][tr].max()]
    return tr, te


@pytest.fixture(scope="session")
def split_within_follow_up():
    """A random split whose test times lie inside the training follow-up (metrics defined)."""
    return _split_within_follow_up


@pytest.fixture()
def fast_config():
    """Small grids and forests for quick protocol runs (a fresh copy per test)."""
    import copy

    return copy.deepcopy(_FAST_CONFIG)
