"""Shared fixtures: a small synthetic cohort, made once per test session."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A 24-patient synthetic cohort with small bags (path to its cohort.csv)."""
    from radiopath.datasets import make_synthetic_cohort

    out = tmp_path_factory.mktemp("small_cohort")
    return make_synthetic_cohort(
        out,
        n_patients=24,
        dim=8,
        wsi_patches=(120, 240),
        ct_patches=(80, 160),
        seed=3,
        progress=False,
    )
