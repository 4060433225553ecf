"""The value rules of radiopath.config_rules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from radiopath.config_rules import FILE_PATH, MAPPING, Flag, Number, OneOf, check_rules
from radiopath.errors import RadiopathInputError


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (Number(low=0, low_open=True), [1e-9, 3, 2.5], [0, -1, "1", True, None, math.nan]),
        (Number(low=1, integer=True), [1, 7], [0, 1.0, False]),
        (Number(high=1, high_open=True, optional=True), [None, 0.99, -5], [1, 1.5]),
        (Flag(), [True, False], [0, 1, "true", None]),
        (OneOf(("auto", True, False)), ["auto", True, False], [1, 0, "yes", None]),
        (MAPPING, [{}, {"wsi": 1}], [None, "wsi", ["wsi"]]),
        (FILE_PATH, ["w.pt", Path("w.pt")], [None, 3, ["w.pt"]]),
    ],
)
def test_rules_accept_and_refuse(rule, good, bad):
    assert all(rule.accepts(v) for v in good)
    assert not any(rule.accepts(v) for v in bad)


def test_check_rules_names_the_first_broken_dotted_key_and_skips_absent_ones():
    rules = {"a": Number(), "b.c": Flag(), "b.d": OneOf(("x",))}
    check_rules({"a": 1, "b": {"c": True}}, rules)  # b.d absent: skipped
    with pytest.raises(RadiopathInputError) as err:
        check_rules({"a": 1, "b": {"c": "yes", "d": "y"}}, rules)
    assert err.value.field == "b.c" and "true or false" in str(err.value)
    assert "'yes'" in str(err.value)
    assert Number(low=0, high=1, high_open=True, integer=True).describe() == (
        "an integer >= 0 and < 1"
    )
