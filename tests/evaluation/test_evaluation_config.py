"""Every key of the evaluation configuration: a wrong value is refused by its dotted name."""

from __future__ import annotations

import pytest

from radiopath.config_rules import leaf_keys, nested
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import DEFAULT_CONFIG, resolve_evaluation_config

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
    assert cfg["rsf"]["max_features"] == 0.5
