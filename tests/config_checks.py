"""Helpers of the configuration-typo tests (each in the test file of the module it checks):
``refused(field, allowed)``, the quick benchmark settings ``FAST`` those tests start from, the
repository ``ROOT``; imported by name, as tests/ is on ``sys.path`` (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radiopath.errors import RadiopathInputError

ROOT = Path(__file__).resolve().parents[1]


FAST = {
    "aggregators": ["sparra", "mean"],
    "models": ["coxph"],
    "folds": 3,
    "train": {"epochs": 1, "batch_size": 8},
    "evaluation": {"backend": "torch", "cv": {"n_splits": 3}},
}


def refused(field: str, allowed: str | None = None):
    """``pytest.raises`` for an error naming ``field`` (and an allowed key, if given)."""
    pattern = f"field '{field}'"
    if allowed is not None:
        pattern += f".*allowed keys: .*'{allowed}'"
    return pytest.raises(RadiopathInputError, match=pattern)


def empty_or_absent(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
