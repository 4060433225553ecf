"""Graphs of the small synthetic cohort, built once with ``radiopath.graph``."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small graphs train faster on one thread, and the CI machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_graphs(small_cohort, tmp_path_factory):
    """Folder of graphs (with manifest.csv) for the session's small cohort."""
    from radiopath.graph import build_cohort_graphs

    out = tmp_path_factory.mktemp("small_graphs")
    build_cohort_graphs(small_cohort, out, progress=False)
    return out
