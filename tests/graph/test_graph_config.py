"""radiopath.graph.config: the typed graph configuration and its presets.

A typo or a wrong value of any key is refused by its dotted name (and the preset file it came
from) before any embedding file is opened or anything written; the shipped presets load by
name or path and are mirrored in graphs/; the reference page is generated from the
declarations."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import yaml
from click.testing import CliRunner
from config_checks import ROOT, empty_or_absent, refused, refused_value, write_yaml
from graph_helpers import grid_bag

from radiopath.cli import main
from radiopath.config_rules import leaf_keys
from radiopath.errors import RadiopathInputError
from radiopath.graph import (
    MODALITY_DEFAULTS,
    GraphConfig,
    available_presets,
    build_cohort_graphs,
    build_graph,
    load_preset,
)
from radiopath.graph.cohort import resolve_cohort_presets
from radiopath.graph.config import DEFAULTS, merge_overrides, preset_dir, reference_page

RULES = GraphConfig.rules()
REPO_GRAPHS = ROOT / "graphs"


def test_every_key_has_a_rule():
    assert [k for k, _ in leaf_keys(DEFAULTS)] == list(RULES)


@pytest.mark.parametrize("key", list(RULES))
def test_a_wrong_value_of_every_key_is_refused_by_its_dotted_name(tmp_path, key):
    wrong = refused_value(RULES[key])
    with pytest.raises(RadiopathInputError) as err:
        load_preset({key: wrong})
    assert err.value.field == key
    with pytest.raises(RadiopathInputError) as err:
        resolve_cohort_presets({"wsi": {key: wrong}}, ["wsi", "ct"])
    assert err.value.field == f"preset.wsi.{key}"
    with pytest.raises(RadiopathInputError) as err:
        merge_overrides(GraphConfig(), {key: wrong})
    assert err.value.field == key
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({key: wrong}))
    with pytest.raises(RadiopathInputError) as err:
        load_preset(preset)
    assert err.value.field == key and err.value.path == str(preset)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seed", -1),
        ("seed", 1.5),
        ("k", 0),
        ("k", 2.5),
        ("max_neighbours", True),
        ("lambda_f", -0.1),
        ("lambda_f", True),
        ("lambda_d", float("inf")),
        ("threshold", 0),
        ("radius", 0),
        ("max_edge_length", float("nan")),
        ("self_loops", 1),
        ("modality", "pet"),
    ],
)
def test_out_of_range_values_are_refused_too(key, value):
    with pytest.raises(RadiopathInputError) as err:
        load_preset({key: value})
    assert err.value.field == key


def test_a_radius_graph_needs_its_radius():
    with pytest.raises(RadiopathInputError, match="needs a radius") as err:
        load_preset({"edge_rule": "radius"})
    assert err.value.field == "radius"
    assert load_preset({"edge_rule": "radius", "radius": 2.0}).radius == 2.0
    with pytest.raises(RadiopathInputError, match="needs a radius"):
        merge_overrides(load_preset("wsi-patch-knn"), {"edge_rule": "radius"})


def test_a_typo_at_depth_is_refused_before_the_cohort_is_read(tmp_path, refused_quickly):
    out = tmp_path / "graphs"
    # the cohort does not exist: the presets are checked before it is read
    with refused_quickly("preset.wsi.kk", out):
        build_cohort_graphs(tmp_path / "no-cohort.csv", out, preset={"wsi": {"kk": 3}})
    with refused_quickly("preset.knn", out):
        build_cohort_graphs(tmp_path / "no-cohort.csv", out, preset={"knn": {"k": 3}})


def test_a_typo_in_a_preset_file_is_refused_naming_the_file(
    small_cohort, tmp_path, cli_refused_quickly
):
    bad = tmp_path / "knn.yaml"
    bad.write_text(yaml.safe_dump({"edge_rule": "knn", "kk": 3}))
    out = tmp_path / "graphs"
    args = ["graphs", "--cohort", small_cohort, "--out", out, "--preset", bad]
    assert "did you mean 'k'" in cli_refused_quickly(args, "kk", out, bad)
    bad.write_text(yaml.safe_dump({"edge_rule": "knn", "k": 0}))
    cli_refused_quickly(args, "k", out, bad)


def test_graph_preset_refuses_unknown_keys(small_cohort, tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"method": "clustered", "threshhold": 0.9})
    with pytest.raises(RadiopathInputError, match="bad.yaml.*field 'threshhold'.*'threshold'"):
        load_preset(bad)
    with refused("preset.threshhold", "threshold"):
        resolve_cohort_presets({"threshhold": 0.9}, ["wsi"])
    with refused("preset.wsi.threshhold", "threshold"):
        resolve_cohort_presets({"wsi": {"threshhold": 0.9}}, ["wsi", "ct"])
    with refused("preset.pet", "wsi"):
        resolve_cohort_presets({"wsi": "wsi-clustered", "pet": "ct-clustered-3d"}, ["wsi"])
    out = tmp_path / "graphs"
    result = CliRunner().invoke(
        main, ["graphs", "--cohort", str(small_cohort), "--out", str(out), "--preset", str(bad)]
    )
    assert result.exit_code == 2 and "field 'threshhold'" in result.output
    assert empty_or_absent(out)


def test_shipped_graph_presets_load():
    for folder in (REPO_GRAPHS, ROOT / "radiopath" / "graph" / "presets"):
        files = sorted(folder.glob("*.yaml"))
        assert files
        for f in files:
            load_preset(f)


def test_required_presets_ship_with_the_package():
    assert {"wsi-clustered", "wsi-patch-knn", "ct-clustered-3d"} <= set(available_presets())
    assert MODALITY_DEFAULTS == {"wsi": "wsi-clustered", "ct": "ct-clustered-3d"}


@pytest.mark.parametrize("name", sorted(p.stem for p in preset_dir().glob("*.yaml")))
def test_repository_copy_matches_package_preset(name):
    """graphs/ is the documented place; it must not drift from what installs ship."""
    assert (REPO_GRAPHS / f"{name}.yaml").read_text() == (preset_dir() / f"{name}.yaml").read_text()
    cfg = load_preset(name)
    assert cfg.name == name and set(cfg.to_dict()) == set(DEFAULTS)
    # Every key a preset sets is a real option.
    assert set(yaml.safe_load((preset_dir() / f"{name}.yaml").read_text())) <= set(DEFAULTS)


def test_user_yaml_by_path(tmp_path):
    path = tmp_path / "coarse.yaml"
    path.write_text("method: clustered\nthreshold: 0.9\nedge_rule: knn\nk: 4\n")
    cfg = load_preset(path, "ct")
    assert cfg.name == "coarse" and cfg.threshold == 0.9 and cfg.modality is None
    g = build_graph(grid_bag(side=6), path)
    assert g.build_config["edge_rule"] == "knn"
    coarse = g.num_nodes
    assert coarse < build_graph(grid_bag(side=6), path, threshold=0.7).num_nodes


def test_bad_user_yaml_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("threshold: high\n")
    with pytest.raises(RadiopathInputError, match="bad.yaml.*'threshold'"):
        load_preset(path)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(RadiopathInputError, match="missing.yaml.*does not exist"):
        load_preset(missing)


def test_config_hash_tracks_graph_settings_only():
    cfg = load_preset("wsi-clustered")

    def config_hash(c):
        return build_graph(grid_bag(side=4), c).build_config["config_hash"]

    assert config_hash(cfg) == config_hash({**cfg.to_dict(), "name": "renamed"})
    assert config_hash(cfg) != config_hash(dataclasses.replace(cfg, threshold=0.7))
    assert config_hash(cfg) == cfg.fingerprint()


def test_a_preset_null_sets_its_key_and_an_override_none_keeps_it(tmp_path):
    """defaults <- preset <- overrides: ``max_edge_length: null`` in a preset drops the limit;
    an override of None (an unset flag) leaves the preset's value."""
    path = write_yaml(tmp_path / "open.yaml", {"edge_rule": "knn", "max_edge_length": None})
    cfg = load_preset(path)
    assert cfg.max_edge_length is None and cfg.edge_rule == "knn" and cfg.name == "open"
    assert load_preset({"max_edge_length": None}).max_edge_length is None
    kept = merge_overrides(cfg, {"max_edge_length": None, "k": 4, "threshold": None})
    assert kept.max_edge_length is None and kept.k == 4 and kept.threshold == cfg.threshold
    with pytest.raises(RadiopathInputError) as err:
        merge_overrides(cfg, {"kk": None})  # a typo is refused, even unset
    assert err.value.field == "kk"


def test_a_built_configuration_is_frozen_and_round_trips():
    cfg = load_preset("wsi-clustered")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 3  # type: ignore[misc]
    assert list(cfg.to_dict()) == list(DEFAULTS)
    assert load_preset(cfg.to_dict()) == cfg and load_preset(cfg, "wsi") is cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert load_preset({"name": 7}).name == "7"  # a number names a preset too
    with pytest.raises(RadiopathInputError, match="is for 'wsi' bags"):
        load_preset(cfg, "ct")


def test_the_reference_page_is_generated_from_the_declarations():
    page = ROOT / "docs" / "config-graph.md"
    assert page.read_text() == reference_page(), (
        "docs/config-graph.md is out of date; regenerate it (command at its top)"
    )
    for key in RULES:  # every key is documented
        assert f"| `{key}` |" in page.read_text()
