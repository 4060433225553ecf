"""``rel``: the tolerance measure of the torch solver and estimator tests (tests/evaluation/
and tests/evaluation/estimators/); imported by name (tests/evaluation/ is on ``sys.path``)."""

from __future__ import annotations

import numpy as np


def rel(a, b):
    """Largest absolute difference relative to the largest reference magnitude."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-12))
