"""The extraction stage's settings: a typo or a wrong value of any key is refused by its
dotted name (and the file it came from) before any image is opened or anything written."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from config_checks import ROOT, empty_or_absent, refused_value, write_yaml

from radiopath.cli import main
from radiopath.config_rules import leaf_keys, nested
from radiopath.errors import RadiopathInputError
from radiopath.extract import extract_cohort
from radiopath.extract.config import DEFAULTS, ExtractConfig, resolve_extract_config

RULES = ExtractConfig.rules()
# keys checked by their ``convert`` rather than a rule, with a value it refuses
CONVERTED = {"executor": 12345}
# every key, and the per-modality keys of encoder and checkpoint
KEYS = [k for k, _ in leaf_keys(DEFAULTS)] + [k for k in RULES if k not in DEFAULTS]


def test_every_key_has_a_rule_or_a_check():
    assert {k for k, _ in leaf_keys(DEFAULTS)} - set(RULES) == set(CONVERTED)
    assert {"encoder.wsi", "checkpoint.ct"} <= set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_a_wrong_value_of_every_key_is_refused_by_its_name(tmp_path, refused_quickly, key):
    wrong = CONVERTED[key] if key in CONVERTED else refused_value(RULES[key])
    out = tmp_path / "out"
    # the cohort does not exist: the settings are checked before it is read
    with refused_quickly(key, out):
        extract_cohort(tmp_path / "no-cohort.csv", out, progress=False, **nested(key, wrong))
    with pytest.raises(RadiopathInputError) as err:
        ExtractConfig.from_mapping(nested(key, wrong), file="extract.yaml")
    assert err.value.field == key and err.value.path == "extract.yaml"


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
        ExtractConfig.from_mapping(settings, file="extract.yaml")
    assert err.value.field == field and err.value.path == "extract.yaml"


def test_the_defaults_pass():
    assert ExtractConfig.from_mapping(DEFAULTS) == ExtractConfig()
    cfg = resolve_extract_config(
        {"encoder": {"wsi": "uni", "ct": "segvol"}, "ct_spacing": (1, 1, 2)}
    )
    assert cfg.encoder["ct"] == "segvol" and cfg.ct_spacing == (1, 1, 2)


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


def test_a_built_configuration_is_frozen_and_round_trips():
    import dataclasses
    import pickle

    cfg = resolve_extract_config(
        {"encoder": {"wsi": "uni"}, "executor": {"name": "ray", "workers": 2}},
        {"ct_spacing": (1, 1, 2), "checkpoint": None},
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mpp = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.encoder["ct"] = "segvol"  # type: ignore[index]
    assert cfg.ct_spacing == (1, 1, 2) and cfg.checkpoint is None
    # the plain form is the one the settings were given in, key for key, in DEFAULTS' order
    assert cfg.to_dict() == {
        **DEFAULTS,
        "encoder": {"wsi": "uni"},
        "executor": {"name": "ray", "workers": 2},
        "ct_spacing": [1, 1, 2],
    }
    assert list(cfg.to_dict()) == list(DEFAULTS) and type(cfg.to_dict()["encoder"]) is dict
    assert resolve_extract_config(cfg.to_dict()) == cfg and resolve_extract_config(cfg) is cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg and hash(cfg) == hash(
        pickle.loads(pickle.dumps(cfg))
    )


def test_layers_lay_over_each_other():
    """defaults <- file <- flags, as ``radiopath extract`` builds them; an unset flag (None)
    keeps the file's value, a per-modality mapping is merged key by key."""
    file = ExtractConfig.from_mapping({"encoder": {"wsi": "uni"}, "batch_size": 8, "mpp": 1.0})
    flags = resolve_extract_config(
        file, {"encoder": {"ct": "segvol"}, "batch_size": None, "mpp": 0.25}
    )
    assert dict(flags.encoder) == {"wsi": "uni", "ct": "segvol"}
    assert (flags.batch_size, flags.mpp) == (8, 0.25)


def test_the_reference_page_is_generated_from_the_declarations():
    from radiopath.extract.config import reference_page

    page = ROOT / "docs" / "config-extract.md"
    assert page.read_text() == reference_page(), (
        "docs/config-extract.md is out of date; regenerate it (command at its top)"
    )
    for key, _ in leaf_keys(DEFAULTS):  # every key is documented
        assert f"| `{key}` |" in page.read_text()


def test_every_flag_of_radiopath_extract_sets_a_key():
    from radiopath.commands.extract import extract as command

    run_options = {"cohort_csv", "out", "config_file", "no_progress", "executor_name", "address"}
    flags = {p.name for p in command.params} - run_options
    assert flags and flags <= set(DEFAULTS) - {"executor"}  # --executor/--address build executor
