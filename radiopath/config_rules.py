"""Value rules for configuration keys: one table per stage, checked at every depth.

A stage lists, for each dotted key, what a value may be (:class:`Number`, :class:`Flag`,
:class:`OneOf`); :func:`check_rules` refuses the first value that breaks its rule with a
:class:`~radiopath.errors.RadiopathInputError` naming the dotted key, the rule and the
value, before any work starts. Unknown keys are :func:`radiopath.config.check_known_keys`'
job; rules that need several keys at once stay in the stage's own validation.

    >>> check_rules({"lr": "fast"}, {"lr": Number(low=0, low_open=True)})
    Traceback (most recent call last):
    ...
    radiopath.errors.RadiopathInputError: field 'lr': must be a number > 0, got 'fast'
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from radiopath.errors import RadiopathInputError

_MISSING = object()


@dataclass(frozen=True)
class Number:
    """A finite number (``integer``: a whole one, not a bool) in ``[low, high]``, each end
    open when asked; ``optional`` also allows ``None``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False

    def describe(self) -> str:
        what = "an integer" if self.integer else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        text = what + (" " + " and ".join(bounds) if bounds else "")
        return text + (" or null" if self.optional else "")

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false``."""

    def describe(self) -> str:
        return "true or false"

    def accepts(self, value) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class OneOf:
    """One of ``values`` (compared with ``==``, so ``True`` and ``1`` are kept apart)."""

    values: tuple

    def describe(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)

    def accepts(self, value) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)


@dataclass(frozen=True)
class Text:
    """A string."""

    def describe(self) -> str:
        return "text"

    def accepts(self, value) -> bool:
        return isinstance(value, str)


@dataclass(frozen=True)
class Kind:
    """An instance of one of ``types``, described as ``what``: e.g. :data:`MAPPING` (a section
    whose keys have rules of their own) or :data:`FILE_PATH`."""

    types: tuple
    what: str

    def describe(self) -> str:
        return self.what

    def accepts(self, value) -> bool:
        return isinstance(value, self.types)


MAPPING = Kind((Mapping,), "a mapping")
FILE_PATH = Kind((str, os.PathLike), "a file path")


@dataclass(frozen=True)
class ListOf:
    """A non-empty list (a grid of values) whose every item follows ``item``; ``length``
    fixes its length."""

    item: object
    length: int | None = None
    allow_empty: bool = False

    def describe(self) -> str:
        size = f"a list of {self.length}" if self.length else "a list"
        if not self.allow_empty and not self.length:
            size = "a non-empty list"
        return f"{size}, each {self.item.describe()}"

    def accepts(self, value) -> bool:
        if not isinstance(value, (list, tuple)) or (not value and not self.allow_empty):
            return False
        if self.length is not None and len(value) != self.length:
            return False
        return all(self.item.accepts(v) for v in value)


@dataclass(frozen=True)
class Either:
    """Any one of ``rules``."""

    rules: tuple

    def describe(self) -> str:
        return " or ".join(r.describe() for r in self.rules)

    def accepts(self, value) -> bool:
        return any(r.accepts(value) for r in self.rules)


def _lookup(cfg: Mapping, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check_rules(
    cfg: Mapping, rules: Mapping, *, path: str | os.PathLike | None = None, where: str = ""
) -> None:
    """Refuse the first value of ``cfg`` that breaks its rule (keys absent from ``cfg`` are
    skipped), naming the dotted key (under ``where``, the section ``cfg`` is, if given) and
    ``path``, the file ``cfg`` was read from."""
    for key, rule in rules.items():
        value = _lookup(cfg, key)
        if value is not _MISSING and not rule.accepts(value):
            raise RadiopathInputError(
                f"must be {rule.describe()}, got {value!r}",
                path=path,
                field=f"{where}.{key}" if where else key,
            )


def leaf_keys(config: Mapping, prefix: str = ""):
    """``(dotted key, value)`` of every leaf of a nested configuration (an empty mapping is a
    leaf), depth first in the mapping's order."""
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_keys(value, dotted + ".")
        else:
            yield dotted, value


def nested(dotted: str, value) -> dict:
    """``{"a": {"b": value}}`` from ``"a.b"``: one key of a configuration, for overrides."""
    out: dict = {}
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out
