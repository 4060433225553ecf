"""File names from patient IDs: one rule for every stage, no two IDs on one name."""

from __future__ import annotations

import re

import pytest

from radiopath.runkit import safe_filename


@pytest.mark.parametrize("name", ["SYN0001", "TCGA-B0-5094", "x.y-z_1", "_a"])
def test_portable_names_are_kept(name):
    assert safe_filename(name) == name


@pytest.mark.parametrize("name", ["a/b", "a b", "..", ".hidden", "é", "a\\b", "a:b", ""])
def test_other_names_become_portable_and_hashed(name):
    out = safe_filename(name)
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", out), out
    assert not out.startswith(".") and out not in {".", ".."}
    assert out != name and safe_filename(name) == out  # deterministic


def test_ids_that_sanitise_alike_get_different_names():
    names = ["a/b", "a_b", "a b", "a:b", "a\\b", "a__b", "a/b/"]
    assert len({safe_filename(n) for n in names}) == len(names)
