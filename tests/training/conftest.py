"""Training tests run on one thread (the small cohort's graphs, ``small_graphs``, are a
session fixture of tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every training test runs on one thread (``one_thread`` of tests/conftest.py)."""
