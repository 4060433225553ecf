"""Outer folds: stratified, reproducible, validated."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiopath.errors import RadiopathInputError
from radiopath.training.folds import check_folds, make_folds, read_folds, write_folds


def test_folds_are_stratified_and_reproducible():
    rng = np.random.default_rng(0)
    events = (rng.uniform(size=103) < 0.3).astype(int)
    ids = [f"P{i}" for i in range(103)]
    folds = make_folds(ids, events, n_folds=5, seed=7)
    assert folds["patient_id"].tolist() == ids
    per_fold_events = pd.Series(events).groupby(folds["fold"]).sum()
    assert per_fold_events.max() - per_fold_events.min() <= 1
    assert folds["fold"].value_counts().max() - folds["fold"].value_counts().min() <= 1
    assert folds.equals(make_folds(ids, events, n_folds=5, seed=7))
    assert not folds.equals(make_folds(ids, events, n_folds=5, seed=8))


def test_too_few_events_is_named():
    with pytest.raises(RadiopathInputError, match="field 'n_folds'.*at least 5 events"):
        make_folds(["a", "b", "c", "d", "e", "f"], [1, 1, 0, 0, 0, 0], n_folds=5)


def test_round_trip_and_missing_patient(tmp_path):
    folds = make_folds(["a", "b", "c", "d"], [1, 0, 1, 0], n_folds=2, seed=0)
    path = write_folds(folds, tmp_path / "folds.csv")
    again = read_folds(path)
    assert again.equals(folds)
    with pytest.raises(RadiopathInputError, match="patient 'e'.*no fold"):
        check_folds(again, ["a", "b", "c", "d", "e"], path)
    dup = pd.concat([again, again.iloc[:1]])
    with pytest.raises(RadiopathInputError, match="patient 'a'.*twice"):
        check_folds(dup, ["a", "b", "c", "d"])


def test_bad_folds_file_is_named(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("patient_id,fold\na,0\nb,x\n")
    with pytest.raises(RadiopathInputError, match="patient 'b'.*field 'fold'"):
        read_folds(path)
    path.write_text("patient,fold\na,0\n")
    with pytest.raises(RadiopathInputError, match="field 'patient_id'"):
        read_folds(path)
