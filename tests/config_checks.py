"""Helpers of the configuration-typo tests (each in the test file of the module it checks):
``refused(field, allowed)``, ``refused_value(rule)``, the quick benchmark settings ``FAST``
those tests start from, the repository ``ROOT``; imported by name, as tests/ is on
``sys.path`` (tests/conftest.py)."""

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


# a text, a number, a list, a negative number: one of them breaks any rule of a key
_WRONG_VALUES = ("wrong", 12345, ["a", "list"], -1.5)


def refused_value(rule):
    """A value that ``rule`` (:mod:`radiopath.config_rules`) refuses: the first of a text, a
    number, a list and a negative number that it does not accept, so that a key's test
    follows its declared rule."""
    return next(v for v in _WRONG_VALUES if not rule.accepts(v))


def empty_or_absent(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path
