"""Graphs of the small synthetic cohort, built once with ``radiopath.graph``."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every training test runs on one thread (``one_thread`` of tests/conftest.py)."""


@pytest.fixture(scope="session")
def small_graphs(small_cohort, tmp_path_factory):
    """Folder of graphs (with manifest.csv) for the session's small cohort."""
    from radiopath.graph import build_cohort_graphs

    out = tmp_path_factory.mktemp("small_graphs")
    build_cohort_graphs(small_cohort, out, progress=False)
    return out
