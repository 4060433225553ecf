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


@dataclass(frozen=True)
class Flat(TypedConfig):
    """A flat configuration, keys at the top level of a file."""

    limit: float | None = setting(10.0, Number(low=0, optional=True), "A limit (null: none).")
    count: int = setting(3, Number(low=1, integer=True), "A count.")
    names: object = setting("a", doc="A name, or one per modality.", allowed="text or a mapping")


def test_nulls_keep_or_set_and_overrides_skip_unset_values():
    assert Flat.from_mapping({"limit": None}).limit == 10.0  # an unset flag: kept
    assert Flat.from_mapping({"limit": None}, null_sets=True).limit is None  # a file's null
    base = Flat.from_mapping({"count": 5})
    assert base.with_overrides({"count": None, "limit": 2.0}) == Flat(limit=2.0, count=5)
    assert base.with_overrides({"count": None}) is base
    with pytest.raises(RadiopathInputError) as err:
        base.with_overrides({"cuont": None}, "x")  # a typo is refused, set or not
    assert err.value.field == "x.cuont"


def test_mapping_values_are_frozen_and_given_back_as_dicts():
    import pickle

    cfg = Flat.from_mapping({"names": {"wsi": "uni", "ct": ["a", "b"]}})
    assert cfg.names == {"wsi": "uni", "ct": ("a", "b")} and hash(cfg) == hash(Flat(**vars(cfg)))
    with pytest.raises(TypeError):
        cfg.names["wsi"] = "conch"  # type: ignore[index]
    assert cfg.to_dict()["names"] == {"wsi": "uni", "ct": ["a", "b"]}
    assert type(cfg.to_dict()["names"]) is dict and pickle.loads(pickle.dumps(cfg)) == cfg


def test_a_convert_error_names_the_file_that_set_the_key():
    def positive(value):
        if value < 0:
            raise RadiopathInputError("must be >= 0", field="x.scale")
        return value

    @dataclass(frozen=True)
    class Checked(TypedConfig):
        scale: float = setting(1.0, doc="Checked by convert.", convert=positive, allowed=">= 0")

    with pytest.raises(RadiopathInputError) as err:
        Checked.from_mapping({"scale": -1.0}, "x", file="conf.yaml")
    assert err.value.field == "x.scale" and err.value.path == "conf.yaml"


def test_a_top_level_reference_names_keys_as_written_and_a_page_says_how_to_regenerate():
    from radiopath.typed_config import generated_page

    text = reference_table(Flat, "")
    assert text.startswith("## Keys\n\nA flat configuration") and "| `count` | `3` |" in text
    page = generated_page(Flat, "", title="Flat", page="docs/flat.md", intro="Its keys.")
    assert page.startswith("# Flat\n\n<!-- generated from test_typed_config.Flat;")
    assert (
        "import reference_page as r;" in page
        and "> docs/flat.md -->\n\nIts keys.\n\n## Keys" in page
    )
