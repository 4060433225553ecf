"""Every key of the benchmark's own sections: a wrong value is refused by its dotted name
before any work (the train and evaluation sections have their own tests)."""

from __future__ import annotations

import copy

import pytest

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
