"""The extraction stage's settings: a typo or a wrong value of any key is refused by its
dotted name (and the file it came from) before any image is opened or anything written."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from config_checks import empty_or_absent, write_yaml

from radiopath.cli import main
from radiopath.config_rules import leaf_keys
from radiopath.errors import RadiopathInputError
from radiopath.extract import extract_cohort
from radiopath.extract.config import DEFAULTS, check_extract_config

LEAVES = list(leaf_keys(DEFAULTS))
# keys whose default is not text but which take a name: a number is their wrong value
NAMES = {"checkpoint"}


@pytest.mark.parametrize(("key", "default"), LEAVES, ids=[k for k, _ in LEAVES])
def test_a_wrong_value_of_every_key_is_refused_by_its_name(tmp_path, refused_quickly, key, default):
    wrong = 12345 if key in NAMES or isinstance(default, str) else "wrong"
    out = tmp_path / "out"
    # the cohort does not exist: the settings are checked before it is read
    with refused_quickly(key, out):
        extract_cohort(tmp_path / "no-cohort.csv", out, progress=False, **{key: wrong})


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"mpp": 0}, "mpp"),
        ({"patch_size": 22.5}, "patch_size"),
        ({"slide_mpp": -0.25}, "slide_mpp"),
        ({"min_tissue": 1.5}, "min_tissue"),
        ({"ct_spacing": [1.0, 1.0]}, "ct_spacing"),
        ({"ct_spacing": [1.0, 0.0, 1.0]}, "ct_spacing"),
        ({"ct_margin_mm": -1}, "ct_margin_mm"),
        ({"ct_min_fraction": 2}, "ct_min_fraction"),
        ({"workers": True}, "workers"),
        ({"batch_size": 0}, "batch_size"),
        ({"encoder": {"wsi": 3}}, "encoder.wsi"),
        ({"checkpoint": {"ct": 5}}, "checkpoint.ct"),
        ({"executor": {"name": "ray", "adress": "auto"}}, "executor.adress"),
    ],
)
def test_out_of_range_values_name_the_key_and_the_file(settings, field):
    with pytest.raises(RadiopathInputError) as err:
        check_extract_config(settings, path="extract.yaml")
    assert err.value.field == field and err.value.path == "extract.yaml"


def test_the_defaults_pass():
    check_extract_config(DEFAULTS)
    check_extract_config({"encoder": {"wsi": "uni", "ct": "segvol"}, "ct_spacing": (1, 1, 2)})


def test_a_typo_at_depth_in_a_config_file_is_refused_before_anything(tmp_path, cli_refused_quickly):
    bad = tmp_path / "extract.yaml"
    bad.write_text(yaml.safe_dump({"encoder": {"wsi": "handcrafted", "cct": "handcrafted"}}))
    out = tmp_path / "out"
    args = ["extract", "--cohort", tmp_path / "c.csv", "--out", out, "--config", bad]
    message = cli_refused_quickly(args, "encoder.cct", out, bad)
    assert "did you mean 'ct'" in message
    bad.write_text(yaml.safe_dump({"tile_size": 224}))
    assert "did you mean 'patch_size'" in cli_refused_quickly(args, "tile_size", out, bad)
    bad.write_text(yaml.safe_dump({"ct_spacing": [1, 1]}))
    cli_refused_quickly(args, "ct_spacing", out, bad)


@pytest.mark.parametrize(
    ("config", "field", "allowed"),
    [
        ({"ct_spacng": [1, 1, 1]}, "ct_spacng", "ct_spacing"),
        ({"encoder": {"wsi": "handcrafted", "pet": "handcrafted"}}, "encoder.pet", "ct"),
        ({"checkpoint": {"cat": "w.pt"}}, "checkpoint.cat", "wsi"),
    ],
)
def test_extract_refuses_unknown_keys(tmp_path, config, field, allowed):
    bad = write_yaml(tmp_path / "extract.yaml", config)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["extract", "--cohort", str(tmp_path / "c.csv"), "--out", str(out), "--config", str(bad)],
    )
    assert result.exit_code == 2, result.output
    assert f"field '{field}'" in result.output and f"'{allowed}'" in result.output
    assert "extract.yaml" in result.output
    assert empty_or_absent(out)
