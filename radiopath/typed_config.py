"""Typed configurations: frozen dataclass trees whose fields carry their rule and their doc.

A stage declares its configuration as ``@dataclass(frozen=True)`` classes deriving from
:class:`TypedConfig`; each leaf is a :func:`setting` (its default, its rule from
:mod:`radiopath.config_rules`, a one-line doc) and each nested section a :func:`section`.
:meth:`TypedConfig.from_mapping` builds the tree from a nested mapping laid over the
defaults (or over another built configuration: defaults <- preset <- file <- flags), refusing
an unknown key at any depth (with a did-you-mean) and a value that breaks its rule, both
named by the dotted key; :meth:`TypedConfig.to_dict` gives the plain nested dict back (lists
for grids), the form run records and fingerprints are written in; :func:`reference_table`
documents every key from the same declarations.

    >>> from dataclasses import dataclass
    >>> from radiopath.config_rules import ListOf, Number
    >>> @dataclass(frozen=True)
    ... class Grid(TypedConfig):
    ...     alpha: tuple = setting([1.0, 10.0], ListOf(Number(low=0)), "Ridge penalties.")
    >>> Grid.from_mapping({"alpha": [0.5]}, "demo").alpha
    (0.5,)
    >>> Grid.from_mapping({"alpha": "big"}, "demo")
    Traceback (most recent call last):
    ...
    radiopath.errors.RadiopathInputError: field 'demo.alpha': must be a non-empty list, each a number >= 0, got 'big'
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields

from radiopath.config import check_known_keys, deep_merge
from radiopath.config_rules import check_rules
from radiopath.errors import RadiopathInputError

__all__ = ["TypedConfig", "reference_table", "section", "setting"]


def _freeze(value):
    """Lists (grids) as tuples, at any depth, so that a built configuration cannot change."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    """Tuples back to lists: the JSON-like form the configuration was given in."""
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def setting(
    default,
    rule=None,
    doc: str = "",
    *,
    convert: Callable | None = None,
    allowed: str | None = None,
) -> Field:
    """A leaf key: its ``default``, its ``rule`` (``accepts``/``describe``, e.g.
    :class:`~radiopath.config_rules.Number`), a one-line ``doc``; ``convert`` normalises
    (and checks) the value once merged, ``allowed`` describes the values when ``rule`` is
    None (``convert`` checks them)."""
    meta = {"rule": rule, "doc": doc, "convert": convert, "allowed": allowed}
    return field(default=_freeze(default), metadata=meta)


def section(cls: type, doc: str = "") -> Field:
    """A nested section: a :class:`TypedConfig` subclass, built from its own defaults."""
    return field(default_factory=cls, metadata={"section": cls, "doc": doc})


def _leaves(cls: type, prefix: str = ""):
    """``(dotted key, field)`` of every leaf of ``cls``, in declaration order."""
    for f in fields(cls):
        sub = f.metadata.get("section")
        if sub is not None:
            yield from _leaves(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


class TypedConfig:
    """Base of a frozen dataclass configuration tree (see the module's doc)."""

    @classmethod
    def rules(cls) -> dict:
        """``{dotted key: rule}`` of every leaf with a rule (for :func:`check_rules`)."""
        return {k: f.metadata["rule"] for k, f in _leaves(cls) if f.metadata.get("rule")}

    @classmethod
    def known_keys(cls) -> dict:
        """The allowed-keys tree of :func:`radiopath.config.check_known_keys`."""
        out = {}
        for f in fields(cls):
            sub = f.metadata.get("section")
            out[f.name] = sub.known_keys() if sub is not None else None
        return out

    @classmethod
    def from_mapping(
        cls,
        data: Mapping | None,
        path: str = "",
        *,
        base: TypedConfig | None = None,
        file: str | os.PathLike | None = None,
    ):
        """``data`` (a nested mapping, keys relative to ``path``) laid over ``base`` (default:
        the defaults); a None value (where its rule allows one) keeps what is below it.

        Raises
        ------
        RadiopathInputError
            Naming the dotted key (``path.section.key``) of the first unknown key (with the
            keys allowed there) or value breaking its rule (with the values allowed), and
            ``file``, the file ``data`` was read from.
        """
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise RadiopathInputError(
                f"the {path or 'whole'} configuration must be a mapping", path=file, field=path
            )
        check_known_keys(data, cls.known_keys(), path, path=file)
        check_rules(data, cls.rules(), path=file, where=path)
        below = base if base is not None else cls()
        return cls._build(deep_merge(below.to_dict(), data))

    @classmethod
    def _build(cls, values: Mapping):
        kwargs = {}
        for f in fields(cls):
            sub, value = f.metadata.get("section"), values[f.name]
            if sub is not None:
                kwargs[f.name] = sub._build(value)
                continue
            convert = f.metadata.get("convert")
            kwargs[f.name] = _freeze(convert(value) if convert else value)
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """The plain nested dict (grids as lists), in declaration order."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, TypedConfig) else _thaw(value)
        return out


def _allowed(f: Field) -> str:
    rule = f.metadata.get("rule")
    return rule.describe() if rule is not None else f.metadata.get("allowed") or "any value"


def _default_text(f: Field) -> str:
    default = f.default if f.default is not MISSING else f.default_factory()
    return json.dumps(_thaw(default))


def reference_table(cls: type, path: str) -> str:
    """A markdown reference of every key of ``cls`` (a :class:`TypedConfig`): one table per
    section, with each key's default, allowed values and doc. ``path`` is the dotted key of
    ``cls`` in a file ("": the whole file, its keys at the top level)."""
    lines: list[str] = []
    _reference_section(cls, path, (cls.__doc__ or "").strip(), lines)
    return "\n".join(lines).rstrip() + "\n"


def _reference_section(cls: type, path: str, doc: str, lines: list[str]) -> None:
    own = [f for f in fields(cls) if f.metadata.get("section") is None]
    lines += [f"## `{path}`" if path else "## top level", "", doc.splitlines()[0] if doc else ""]
    lines.append("")
    if own:
        lines += ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        for f in own:
            key = f"{path}.{f.name}" if path else f.name
            cells = (f"`{key}`", f"`{_default_text(f)}`", _allowed(f), f.metadata["doc"])
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    for f in fields(cls):
        sub = f.metadata.get("section")
        if sub is not None:
            dotted = f"{path}.{f.name}" if path else f.name
            _reference_section(sub, dotted, f.metadata["doc"], lines)
