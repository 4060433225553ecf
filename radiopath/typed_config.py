"""Typed configurations: frozen dataclass trees whose fields carry their rule and their doc.

A stage declares its configuration as ``@dataclass(frozen=True)`` classes deriving from
:class:`TypedConfig`; each leaf is a :func:`setting` (its default, its rule from
:mod:`radiopath.config_rules`, a one-line doc) and each nested section a :func:`section`.
:meth:`TypedConfig.from_mapping` builds the tree from a nested mapping laid over the
defaults (or over another built configuration: defaults <- preset <- file <- flags), refusing
an unknown key at any depth (with a did-you-mean) and a value that breaks its rule, both
named by the dotted key; :meth:`TypedConfig.to_dict` gives the plain nested dict back (lists
for grids, dicts for mapping values), the form run records and fingerprints are written in;
:func:`reference_table` documents every key from the same declarations.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, field, fields

from radiopath.config import check_known_keys, deep_merge, naming_file
from radiopath.config_rules import check_rules
from radiopath.errors import RadiopathInputError

__all__ = [
    "FrozenMapping",
    "TypedConfig",
    "generated_page",
    "reference_table",
    "section",
    "setting",
]


class FrozenMapping(Mapping):
    """A mapping that cannot change, as a built configuration holds a mapping value (e.g. one
    setting per modality, ``{"wsi": "uni", "ct": "segvol"}``); hashable and picklable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping = ()) -> None:
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"


def _freeze(value):
    """Lists (grids) as tuples and mappings as :class:`FrozenMapping`, at any depth, so that
    a built configuration cannot change."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return FrozenMapping({k: _freeze(v) for k, v in value.items()})
    return value


def _thaw(value):
    """Tuples back to lists and mappings to dicts: the JSON-like form the configuration was
    given in."""
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
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
        null_sets: bool = False,
    ):
        """``data`` (a nested mapping, keys relative to ``path``) laid over ``base`` (default:
        the defaults); a None value (where its rule allows one) keeps what is below it (an
        unset flag), or with ``null_sets`` sets the key to None (a file's explicit ``null``).

        Raises
        ------
        RadiopathInputError
            Naming the dotted key (``path.section.key``) of the first unknown key (with the
            keys allowed there) or value breaking its rule or its ``convert`` (with the values
            allowed), and ``file``, the file ``data`` was read from.
        """
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise RadiopathInputError(
                f"the {path or 'whole'} configuration must be a mapping", path=file, field=path
            )
        check_known_keys(data, cls.known_keys(), path, path=file)
        check_rules(data, cls.rules(), path=file, where=path)
        below = base if base is not None else cls()
        with naming_file(file, data, path):
            return cls._build(deep_merge(below.to_dict(), data, skip_none=not null_sets))

    def with_overrides(self, overrides: Mapping | None, path: str = ""):
        """``overrides`` (keyword settings, command-line flags) laid over this configuration:
        every key is checked, a None value counts as not given."""
        overrides = overrides or {}
        check_known_keys(overrides, self.known_keys(), path)
        given = {k: v for k, v in overrides.items() if v is not None}
        return type(self).from_mapping(given, path, base=self) if given else self

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
    section, with each key's default, allowed values and doc; ``path`` is the dotted key of
    ``cls`` itself ("": its keys are the top level of a file, named as they are)."""
    lines: list[str] = []
    _reference_section(cls, path, (cls.__doc__ or "").strip(), lines)
    return "\n".join(lines).rstrip() + "\n"


def _dotted(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _reference_section(cls: type, path: str, doc: str, lines: list[str]) -> None:
    own = [f for f in fields(cls) if f.metadata.get("section") is None]
    lines += [f"## `{path}`" if path else "## Keys", "", doc.splitlines()[0] if doc else "", ""]
    if own:
        lines += ["| key | default | allowed | meaning |", "| --- | --- | --- | --- |"]
        for f in own:
            key = _dotted(path, f.name)
            cells = (f"`{key}`", f"`{_default_text(f)}`", _allowed(f), f.metadata["doc"])
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    for f in fields(cls):
        sub = f.metadata.get("section")
        if sub is not None:
            _reference_section(sub, _dotted(path, f.name), f.metadata["doc"], lines)


def generated_page(cls: type, path: str, *, title: str, page: str, intro: str) -> str:
    """A whole reference page (``page``, e.g. ``docs/config-graph.md``): ``title``, the command
    that regenerates it from the ``reference_page()`` of ``cls``'s module, ``intro``, then
    :func:`reference_table`."""
    module = cls.__module__
    head = (
        f"# {title}\n\n"
        f"<!-- generated from {module}.{cls.__name__}; regenerate with\n"
        f"python -c 'from {module} import reference_page as r; "
        f'print(r(), end="")\' > {page} -->\n\n'
        f"{intro}\n\n"
    )
    return head + reference_table(cls, path)
