"""Model tests run on one thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def single_thread(one_thread):
    """Every model test runs on one thread (``one_thread`` of tests/conftest.py)."""
