"""radiopath.typed_config: frozen dataclass trees built from nested mappings, keys documented."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from radiopath.config_rules import Flag, ListOf, Number, OneOf
from radiopath.errors import RadiopathInputError
from radiopath.typed_config import TypedConfig, reference_table, section, setting


@dataclass(frozen=True)
class Inner(TypedConfig):
    """An inner section."""

    grid: tuple = setting([1, 2], ListOf(Number(low=1, integer=True)), "A grid.")
    mode: str = setting("a", OneOf(("a", "b")), "A choice.")


@dataclass(frozen=True)
class Outer(TypedConfig):
    """The whole."""

    on: bool = setting(True, Flag(), "A switch.")
    inner: Inner = section(Inner, "The inner section.")
    scale: float = setting(1.0, doc="Made positive.", convert=abs, allowed="any number")


def test_defaults_layers_and_conversion():
    cfg = Outer.from_mapping({"inner": {"grid": [3]}, "scale": -2.0}, "x")
    assert cfg == Outer(inner=Inner(grid=(3,)), scale=2.0)
    assert cfg.to_dict() == {"on": True, "inner": {"grid": [3], "mode": "a"}, "scale": 2.0}
    top = Outer.from_mapping({"inner": {"mode": "b"}, "scale": None}, "x", base=cfg)
    assert (top.inner.grid, top.inner.mode, top.scale) == ((3,), "b", 2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        top.on = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"inner": {"grd": [1]}}, "x.inner.grd", "did you mean 'grid'"),
        ({"inner": {"grid": [0]}}, "x.inner.grid", "each an integer >= 1"),
        ({"inner": {"mode": "c"}}, "x.inner.mode", "one of 'a', 'b'"),
        ({"inner": 3}, "x.inner", "mapping"),
        ({"on": "yes"}, "x.on", "true or false"),
    ],
)
def test_refusals_name_the_dotted_key_the_allowed_values_and_the_file(data, field, words):
    with pytest.raises(RadiopathInputError) as err:
        Outer.from_mapping(data, "x", file="conf.yaml")
    assert err.value.field == field and words in str(err.value)
    assert "conf.yaml" in str(err.value)
    with pytest.raises(RadiopathInputError, match="must be a mapping"):
        Outer.from_mapping([1], "x")


def test_reference_table_lists_every_key_by_section():
    text = reference_table(Outer, "x")
    assert "## `x`\n\nThe whole." in text and "## `x.inner`\n\nThe inner section." in text
    assert "| `x.inner.mode` | `\"a\"` | one of 'a', 'b' | A choice. |" in text
    assert "| `x.scale` | `1.0` | any number | Made positive. |" in text
    assert "| `x.inner.grid` | `[1, 2]` |" in text
