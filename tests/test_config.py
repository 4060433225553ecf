"""Configuration layering and the run.json provenance record."""

from __future__ import annotations

import json

import pytest
from config_checks import refused

from radiopath.config import (
    KeysOf,
    RunRecord,
    check_known_keys,
    config_section,
    deep_merge,
    resolve_config,
)
from radiopath.errors import RadiopathInputError


def test_layering_defaults_file_flags(tmp_path):
    defaults = {"seed": 0, "train": {"epochs": 20, "lr": 3e-4}, "models": ["rsf"]}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  epochs: 5\nmodels: [coxph, fsvm]\n")
    cfg = resolve_config(defaults, cfg_file, {"seed": 3, "train": {"lr": None}})
    assert cfg == {"seed": 3, "train": {"epochs": 5, "lr": 3e-4}, "models": ["coxph", "fsvm"]}
    assert defaults["train"]["epochs"] == 20  # defaults are not mutated
    (tmp_path / "c.json").write_text(json.dumps({"train": {"epochs": 7}}))
    assert resolve_config(defaults, tmp_path / "c.json")["train"]["epochs"] == 7


def test_bad_config_files(tmp_path):
    with pytest.raises(RadiopathInputError, match="missing.yaml.*does not exist"):
        resolve_config({}, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(RadiopathInputError, match="bad.yaml.*cannot parse"):
        resolve_config({}, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(RadiopathInputError, match="mapping"):
        resolve_config({}, listy)


def test_deep_merge_replaces_leaves_only():
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_run_record_success_failure_and_resume(tmp_path):
    with RunRecord(tmp_path, command="x", config={"k": 1}, seed=5) as run:
        started = json.loads((tmp_path / "run.json").read_text())
        assert started["status"] == "running" and started["seed"] == 5
        run.update(metrics={"c": 0.7})
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["status"] == "finished" and rec["metrics"] == {"c": 0.7}
    assert rec["config"] == {"k": 1}
    assert rec["versions"]["torch"] and rec["versions"]["python"]
    assert rec["started"] <= rec["finished"]
    with pytest.raises(ZeroDivisionError), RunRecord(tmp_path, command="x", config={}, seed=5):
        raise ZeroDivisionError("boom")
    rec = json.loads((tmp_path / "run.json").read_text())
    assert rec["status"] == "failed" and "ZeroDivisionError" in rec["error"]
    assert rec["history"][0]["status"] == "finished"


def test_check_known_keys_walks_every_depth():
    allowed = {
        "a": 1,
        "sec": {"x": 1, "inner": {"y": 2}},
        "per": KeysOf(("wsi", "ct"), scalar=True),
    }
    check_known_keys({"a": 2, "sec": {"inner": {"y": 3}}, "per": {"ct": 1}}, allowed)
    check_known_keys({"per": 0.5}, allowed)  # one value for every modality
    with refused("sec.inner.z", "y"):
        check_known_keys({"sec": {"inner": {"z": 1}}}, allowed)
    with refused("per.pet", "wsi"):
        check_known_keys({"per": {"pet": 1}}, allowed)
    with refused("top.sec"):  # a section given something else than a mapping
        check_known_keys({"sec": 3}, allowed, "top")
    with pytest.raises(RadiopathInputError, match="did you mean 'inner'"):
        check_known_keys({"sec": {"iner": {}}}, allowed)
    with pytest.raises(RadiopathInputError, match="file 'c.yaml', field 'b'"):
        check_known_keys({"b": 1}, allowed, path="c.yaml")


def test_config_section_names_the_full_key():
    with refused("train.sparra.kl"), config_section("train"):
        raise RadiopathInputError("bad", field="sparra.kl")
    with refused("graph.preset.wsi"), config_section("graph.preset", whole="preset"):
        raise RadiopathInputError("bad", field="preset.wsi")
    with refused("train"), config_section("train"):
        raise RadiopathInputError("bad")
    # an error in a file names the key inside that file
    with pytest.raises(RadiopathInputError, match="file 'p.yaml', field 'k'"):
        with config_section("graph"):
            raise RadiopathInputError("bad", path="p.yaml", field="k")


def test_naming_file_names_the_file_for_its_own_keys_only():
    from radiopath.config import naming_file

    data = {"ratio": 0.5, "sparra": {"kl": "x"}}
    for field, named in (("sparra.kl", True), ("ratio.wsi", True), ("epochs", False)):
        with pytest.raises(RadiopathInputError) as err, naming_file("t.yaml", data):
            raise RadiopathInputError("bad", field=field)
        assert (err.value.path == "t.yaml") is named and err.value.field == field
    with pytest.raises(RadiopathInputError) as err:  # a flag set it again
        with naming_file("t.yaml", data, overrides={"sparra": {"kl": "y"}, "epochs": None}):
            raise RadiopathInputError("bad", field="sparra.kl")
    assert err.value.path is None
    with pytest.raises(RadiopathInputError, match="file 't.yaml', field 'evaluation.cv.k'"):
        with naming_file("t.yaml", {"cv": {"k": 1}}, "evaluation"):
            raise RadiopathInputError("bad", field="evaluation.cv.k")
