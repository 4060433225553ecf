"""Every key of the evaluation configuration: a wrong value is refused by its dotted name."""

from __future__ import annotations

import pytest
import yaml
from config_checks import refused

from radiopath.config_rules import leaf_keys, nested
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import DEFAULT_CONFIG, resolve_evaluation_config
from radiopath.evaluation.config import DEFAULT_CONFIG as EVALUATION_DEFAULTS

LEAVES = list(leaf_keys(DEFAULT_CONFIG))
WRONG = {"rsf.max_features": "cube"}  # a whole number is a valid max_features


@pytest.mark.parametrize(("key", "default"), LEAVES, ids=[k for k, _ in LEAVES])
def test_a_wrong_value_of_every_key_is_refused_by_its_dotted_name(key, default):
    wrong = WRONG.get(key, 12345 if isinstance(default, str) else "wrong")
    with pytest.raises(RadiopathInputError) as err:
        resolve_evaluation_config(nested(key, wrong))
    assert err.value.field == f"evaluation.{key}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("rsf.max_depth", []),
        ("rsf.max_depth", [2, 0]),
        ("coxph.alpha", [-1.0]),
        ("coxnet.l1_ratio", [0.0]),
        ("metrics.time_percentiles", [10.0]),
        ("cv.n_splits", 1),
        ("fsvm.optimizer", "adam"),
    ],
)
def test_out_of_range_grids_and_choices_are_refused(key, value):
    with pytest.raises(RadiopathInputError) as err:
        resolve_evaluation_config(nested(key, value))
    assert err.value.field == f"evaluation.{key}"


def test_valid_settings_pass():
    cfg = resolve_evaluation_config(
        {"rsf": {"max_features": 0.5, "n_jobs": -1}, "screening": {"skip_aggregators": []}}
    )
    assert cfg.rsf.max_features == 0.5 and cfg.rsf.n_jobs == -1


# a typo in every section, each model's grid included
TYPOS = [
    ({"screning": {"enabled": False}}, "evaluation.screning"),
    ({"screening": {"p_treshold": 0.1}}, "evaluation.screening.p_treshold"),
    ({"rsf": {"max_depths": [2, 4]}}, "evaluation.rsf.max_depths"),
    ({"coxph": {"alphas": [1.0, 10.0]}}, "evaluation.coxph.alphas"),
    ({"coxnet": {"l1_ratios": [0.5]}}, "evaluation.coxnet.l1_ratios"),
    ({"fsvm": {"alphas": [0.5]}}, "evaluation.fsvm.alphas"),
    ({"metrics": {"horizon": [365]}}, "evaluation.metrics.horizon"),
]


@pytest.mark.parametrize(("config", "field"), TYPOS, ids=[f for _, f in TYPOS])
def test_a_typo_at_depth_is_refused_before_the_run_is_touched(
    tmp_path, refused_quickly, config, field
):
    from radiopath.evaluation import evaluate_run

    run = tmp_path / "run"  # no training run: the configuration is checked first
    with refused_quickly(field, run):
        evaluate_run(run, config=config)
    with refused_quickly(field, run):
        evaluate_run(run, config={"evaluation": config})


@pytest.mark.parametrize(("config", "field"), TYPOS, ids=[f for _, f in TYPOS])
def test_the_cli_names_the_config_file(tmp_path, cli_refused_quickly, config, field):

    bad = tmp_path / "evaluation.yaml"
    run = tmp_path / "run"
    for written in (config, {"evaluation": config}):
        bad.write_text(yaml.safe_dump(written))
        cli_refused_quickly(["evaluate", "--run", run, "--config", bad], field, run, bad)


def test_evaluation_refuses_unknown_top_level_keys():
    with refused("evaluation.screning", "screening"):
        resolve_evaluation_config({"screning": {"enabled": False}})
    with refused("evaluation.screning"):
        resolve_evaluation_config({"evaluation": {"screning": {"enabled": False}}})


SECTIONS = [k for k, v in EVALUATION_DEFAULTS.items() if isinstance(v, dict)]


@pytest.mark.parametrize("section", SECTIONS)
def test_evaluation_refuses_unknown_keys_in_every_section(section):
    assert {"rsf", "coxph", "coxnet", "fsvm"} <= set(SECTIONS)
    key = next(iter(EVALUATION_DEFAULTS[section]))
    with refused(f"evaluation.{section}.{key}s", key):
        resolve_evaluation_config({section: {f"{key}s": 1}})


def test_evaluation_grid_typo_is_not_ignored():
    with refused("evaluation.coxph.alphas", "alpha"):
        resolve_evaluation_config({"coxph": {"alphas": [1.0, 10.0]}})


def test_the_reference_page_is_generated_from_the_declarations():
    from pathlib import Path

    from radiopath.evaluation.config import reference_page

    page = Path(__file__).resolve().parents[2] / "docs" / "config-evaluation.md"
    assert page.read_text() == reference_page(), (
        "docs/config-evaluation.md is out of date; regenerate it (command at its top)"
    )
    for key, _ in LEAVES:  # every key is documented, with its doc
        assert f"| `evaluation.{key}` |" in page.read_text()


def test_a_built_configuration_is_frozen_and_round_trips():
    import dataclasses
    import pickle

    cfg = resolve_evaluation_config({"coxph": {"alpha": [1, 10]}, "metrics": {"horizons": 3}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.coxph.alpha = (5.0,)  # type: ignore[misc]
    assert cfg.coxph.alpha == (1, 10) and cfg.metrics.horizons == (3.0,)
    assert cfg.to_dict()["coxph"]["alpha"] == [1, 10]  # lists again, as records hold them
    assert list(cfg.to_dict()) == list(DEFAULT_CONFIG)
    assert resolve_evaluation_config(cfg.to_dict()) == cfg
    assert resolve_evaluation_config(cfg) is cfg
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_layers_lay_over_a_built_configuration():
    from radiopath.evaluation.config import EvaluationConfig

    file = EvaluationConfig.from_mapping({"rsf": {"n_estimators": 10}}, "evaluation")
    flags = EvaluationConfig.from_mapping(
        {"rsf": {"max_depth": [3]}, "n_jobs": None}, "evaluation", base=file
    )
    assert flags.rsf.n_estimators == 10 and flags.rsf.max_depth == (3,) and flags.n_jobs == 1
    with pytest.raises(RadiopathInputError) as err:
        EvaluationConfig.from_mapping({"rsf": {"engine": "ranger"}}, "evaluation", base=file)
    assert err.value.field == "evaluation.rsf.engine" and "'numba'" in err.value.reason


def test_an_explicit_null_sets_a_key_where_its_rule_allows_one():
    cfg = resolve_evaluation_config({"num_threads": None, "rsf": {"max_features": None}})
    assert cfg.num_threads is None  # torch's default number of threads
    assert cfg.rsf.max_features is None
    assert resolve_evaluation_config({}).num_threads == 1
    with pytest.raises(RadiopathInputError, match=r"evaluation\.cv\.n_splits"):
        resolve_evaluation_config({"cv": {"n_splits": None}})
