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
    with pytest.raises(RadiopathInputError, match="field 'folds'.*at least 5 events"):
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


def test_repeats_are_stratified_distinct_splits_numbered_per_repeat(tmp_path):
    rng = np.random.default_rng(1)
    events = (rng.uniform(size=60) < 0.4).astype(int)
    ids = [f"P{i}" for i in range(60)]
    folds = make_folds(ids, events, n_folds=5, seed=3, repeats=3)
    assert list(folds.columns) == ["patient_id", "repeat", "fold"]
    assert len(folds) == 3 * 60
    for r, part in folds.groupby("repeat"):
        assert part["patient_id"].tolist() == ids  # every patient once per repeat
        assert sorted(part["fold"].unique()) == list(range(5 * r, 5 * r + 5))
        per_fold_events = (
            pd.Series(events, index=ids).groupby(part.set_index("patient_id")["fold"]).sum()
        )
        assert per_fold_events.max() - per_fold_events.min() <= 1
    # repeat 0 is the single split of the same seed; the others differ from it
    single = make_folds(ids, events, n_folds=5, seed=3)
    assert folds[folds.repeat == 0].reset_index(drop=True).equals(single)
    r1 = folds[folds.repeat == 1]["fold"].to_numpy() - 5
    assert not np.array_equal(r1, single["fold"].to_numpy())
    again = check_folds(read_folds(write_folds(folds, tmp_path / "f.csv")), ids[::-1])
    assert set(again.itertuples(index=False)) == set(folds.itertuples(index=False))


def test_repeats_validated_and_old_files_read_as_repeat_zero(tmp_path):
    with pytest.raises(RadiopathInputError, match="field 'repeats'"):
        make_folds(["a", "b", "c", "d"], [1, 0, 1, 0], n_folds=2, repeats=0)
    path = tmp_path / "old.csv"
    path.write_text("patient_id,fold\na,0\nb,1\nc,0\nd,1\n")
    assert read_folds(path)["repeat"].tolist() == [0, 0, 0, 0]
    path.write_text("patient_id,repeat,fold\na,0,0\nb,0,1\na,1,0\nb,1,1\n")
    with pytest.raises(RadiopathInputError, match="fold 0 appears in more than one repeat"):
        check_folds(read_folds(path), ["a", "b"], path)
    path.write_text("patient_id,repeat,fold\na,0,0\nb,0,1\na,1,2\n")
    with pytest.raises(RadiopathInputError, match="patient 'b'.*no fold in repeat 1"):
        check_folds(read_folds(path), ["a", "b"], path)
