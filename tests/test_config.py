"""Configuration layering and the run.json provenance record."""

from __future__ import annotations

import json

import pytest

from radiopath.config import RunRecord, deep_merge, resolve_config
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
