"""Every key of the benchmark's own sections: a wrong value is refused by its dotted name
before any work (the train and evaluation sections have their own tests)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from radiopath.benchmark import run_benchmark
from radiopath.benchmark_config import DEFAULTS, validate_benchmark_config
from radiopath.config import deep_merge
from radiopath.config_rules import leaf_keys, nested
from radiopath.errors import RadiopathInputError
from radiopath.io import read_cohort

LEAVES = [(k, v) for k, v in leaf_keys(DEFAULTS) if not k.startswith(("train.", "evaluation."))]
# keys that take any name: a number is the wrong value
NAMES = {
    "graph.dir",
    *(f"clinical.leibovich.{k}" for k in ("t_stage", "n_stage", "size", "grade", "necrosis")),
}


@pytest.mark.parametrize(("key", "default"), LEAVES, ids=[k for k, _ in LEAVES])
def test_a_wrong_value_of_every_key_is_refused_by_its_dotted_name(small_cohort, key, default):
    cohort = read_cohort(small_cohort)
    wrong = 12345 if key in NAMES or isinstance(default, str) else "wrong"
    cfg = deep_merge(copy.deepcopy(DEFAULTS), nested(key, wrong))
    cfg["folds"] = cfg["folds"] if key == "folds" else 3  # the test cohort has few events
    with pytest.raises(RadiopathInputError) as err:
        validate_benchmark_config(cfg, cohort)
    assert err.value.field == key


FAST = {
    "aggregators": ["sparra", "abmil", "mean"],
    "models": ["coxph"],
    "folds": 3,
    "train": {"epochs": 1},
}
# a typo at depth in every section: train (each aggregator's), evaluation (each model's
# grid), graph (its presets), statistics, clinical, endpoint, executor
TYPOS = [
    ({"train": {"pooling": {"score_nois": 0.5}}}, "train.pooling.score_nois"),
    ({"train": {"sparra": {"alpah0": 1.0}}}, "train.sparra.alpah0"),
    ({"train": {"abmil": {"hiden_channels": 8}}}, "train.abmil.hiden_channels"),
    ({"train": {"mean": {"dropout": 0.1}}}, "train.mean.dropout"),
    ({"evaluation": {"rsf": {"max_depths": [2]}}}, "evaluation.rsf.max_depths"),
    ({"evaluation": {"coxph": {"alphas": [1.0]}}}, "evaluation.coxph.alphas"),
    ({"evaluation": {"coxnet": {"l1_ratios": [0.5]}}}, "evaluation.coxnet.l1_ratios"),
    ({"evaluation": {"fsvm": {"alphas": [0.5]}}}, "evaluation.fsvm.alphas"),
    ({"graph": {"workrs": 2}}, "graph.workrs"),
    ({"graph": {"preset": {"wsi": {"kk": 3}}}}, "graph.preset.wsi.kk"),
    ({"statistics": {"bootstrp": 10}}, "statistics.bootstrp"),
    ({"clinical": {"leibovich": {"t_stag": "t"}}}, "clinical.leibovich.t_stag"),
    ({"endpoint": {"horizn": 365}}, "endpoint.horizn"),
    ({"executor": {"name": "local", "workrs": 2}}, "executor.workrs"),
]


@pytest.mark.parametrize(("bad", "field"), TYPOS, ids=[f for _, f in TYPOS])
def test_a_typo_at_depth_is_refused_before_any_stage(
    small_cohort, tmp_path, refused_quickly, bad, field
):

    out = tmp_path / "run"
    with refused_quickly(field, out):
        run_benchmark(small_cohort, out, deep_merge(FAST, bad), progress=False)


@pytest.mark.parametrize(("bad", "field"), TYPOS[1::4], ids=[f for _, f in TYPOS[1::4]])
def test_a_typo_in_the_config_file_names_the_file(
    small_cohort, tmp_path, refused_quickly, cli_refused_quickly, bad, field
):
    import yaml

    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(deep_merge(FAST, bad)))
    out = tmp_path / "run"
    with refused_quickly(field, out, config):
        run_benchmark(small_cohort, out, config_file=config, progress=False)
    args = ["benchmark", "--cohort", small_cohort, "--out", out, "--config", config]
    cli_refused_quickly(args, field, out, config)


def test_a_bad_override_is_not_blamed_on_the_config_file(small_cohort, tmp_path, refused_quickly):
    import yaml

    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(FAST))
    out = tmp_path / "run"
    with refused_quickly("folds", out) as err:
        run_benchmark(small_cohort, out, {"folds": 1}, config_file=config, progress=False)
    assert err.value.path is None


def test_benchmark_takes_a_study_file_but_not_a_grid():

    from radiopath.benchmark import _benchmark_config_file

    root = Path(__file__).resolve().parents[1] / "experiments"
    study = _benchmark_config_file(root / "radiology.yaml")
    assert study["modalities"] == ["ct"] and study["aggregators"] == ["sparra", "abmil", "mean"]
    with pytest.raises(RadiopathInputError, match="grid.*radiopath sweep"):
        _benchmark_config_file(root / "ablation-topk.yaml")
