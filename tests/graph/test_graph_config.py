"""Graph presets: a typo or a wrong value of any key is refused by its dotted name (and the
preset file it came from) before any embedding file is opened or anything written."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from config_checks import ROOT, empty_or_absent, refused, write_yaml

from radiopath.cli import main
from radiopath.config_rules import leaf_keys
from radiopath.errors import RadiopathInputError
from radiopath.graph import build_cohort_graphs, load_preset
from radiopath.graph.cohort import resolve_cohort_presets
from radiopath.graph.config import DEFAULTS

LEAVES = list(leaf_keys(DEFAULTS))
# keys whose wrong value is not the usual one: the name may be text or a number, the
# feature scale a number or "median"
WRONG = {"name": ["a", "list"], "feature_scale": "mean"}


@pytest.mark.parametrize(("key", "default"), LEAVES, ids=[k for k, _ in LEAVES])
def test_a_wrong_value_of_every_key_is_refused_by_its_dotted_name(tmp_path, key, default):
    wrong = WRONG.get(key, 12345 if isinstance(default, str) else "wrong")
    with pytest.raises(RadiopathInputError) as err:
        load_preset({key: wrong})
    assert err.value.field == key
    with pytest.raises(RadiopathInputError) as err:
        resolve_cohort_presets({"wsi": {key: wrong}}, ["wsi", "ct"])
    assert err.value.field == f"preset.wsi.{key}"
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
    assert load_preset({"edge_rule": "radius", "radius": 2.0})["radius"] == 2.0


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
    for folder in (ROOT / "graphs", ROOT / "radiopath" / "graph" / "presets"):
        files = sorted(folder.glob("*.yaml"))
        assert files
        for f in files:
            load_preset(f)
