"""radiopath.training.validation: the inner split and early stopping on it (patience) --
which epochs are cut, that the run is a prefix of the full one, and that a killed run stops
where it would have."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radiopath.errors import RadiopathInputError
from radiopath.training import loop, train_cross_validated
from radiopath.training.validation import patience_epochs, stops_before, validation_split

# ABMIL on one modality: quick; twelve epochs, the first three not eligible
CFG = {
    "preset": "paper",
    "epochs": 12,
    "folds": 2,
    "batch_size": 8,
    "hidden": 16,
    "validation": {"fraction": 0.3, "metric": "c_index", "start": 0.25},
}


def _train(cohort, graphs, out, **validation):
    cfg = {**CFG, "validation": {**CFG["validation"], **validation}}
    return train_cross_validated(
        cohort, graphs, aggregator="abmil", modalities="wsi", out_dir=out, config=cfg,
        progress=False,
    )  # fmt: skip


def test_patience_is_a_share_of_the_schedule_and_counts_from_the_best_epoch():
    assert patience_epochs(None, 60) is None
    assert patience_epochs(0.25, 60) == 15 and patience_epochs(0.01, 20) == 1
    assert not stops_before(-1, 50, 3)  # no eligible epoch yet: never stop
    assert not stops_before(10, 13, 3)  # epochs 11 and 12 ran without beating 10
    assert stops_before(10, 14, 3)  # 11, 12, 13 did not: epoch 14 does not run
    assert not stops_before(10, 99, None)


def test_validation_split_is_stratified_and_refuses_too_few_patients():
    from radiopath.training.data import PatientRecord

    records = [PatientRecord(f"P{i}", float(i), i % 2, ("wsi",)) for i in range(20)]
    train, val = validation_split(records, 0.3, seed=0)
    assert len(val) == 6 and sum(r.event for r in val) == 3
    assert {r.patient_id for r in train} | {r.patient_id for r in val} == {
        r.patient_id for r in records
    }
    assert validation_split(records, 0.0, 0) == (records, [])
    with pytest.raises(RadiopathInputError, match="validation.fraction"):
        validation_split(records[:3], 0.5, 0)


def _expected_stop(log: pd.DataFrame, start: int, patience: int) -> tuple[int, int]:
    """(epochs run, best epoch) with early stopping, read off a full run's log."""
    best, best_epoch = -np.inf, -1
    for epoch, value in enumerate(log["inner_val_c_index"]):
        if stops_before(best_epoch, epoch, patience):
            return epoch, best_epoch
        if epoch >= start and np.isfinite(value) and value > best:
            best, best_epoch = value, epoch
    return len(log), best_epoch


def test_early_stopping_runs_a_prefix_of_the_full_run(small_cohort, small_graphs, tmp_path):
    """With patience the log is the full run's first epochs to the bit, it ends where the
    full log says the best epoch went unbeaten for the patience, and the fold keeps that
    epoch."""
    full = _train(small_cohort, small_graphs, tmp_path / "full")
    short = _train(small_cohort, small_graphs, tmp_path / "short", patience=0.2)
    stopped = 0
    for k in (0, 1):
        whole = pd.read_csv(tmp_path / "full" / "logs" / f"fold_{k}.csv")
        part = pd.read_csv(tmp_path / "short" / "logs" / f"fold_{k}.csv")
        n, best = _expected_stop(whole, start=3, patience=3)
        assert len(part) == n
        stopped += n < len(whole)
        pd.testing.assert_frame_equal(
            part.drop(columns="seconds"), whole.iloc[:n].drop(columns="seconds")
        )
        state = torch.load(tmp_path / "short" / "checkpoints" / f"fold_{k}.pt", weights_only=False)
        assert state["best"]["epoch"] == best and state["finished"]
    assert stopped, "no fold stopped early: the test checks nothing"
    assert full.folds.equals(short.folds)


def test_a_killed_run_stops_where_it_would_have(small_cohort, small_graphs, tmp_path, monkeypatch):
    """Killed in the epoch after the stopping point's checkpoint is written? Nothing is left
    to run: resuming trains no further epoch, and the risks equal an uninterrupted run's."""
    clean = _train(small_cohort, small_graphs, tmp_path / "clean", patience=0.2)
    n_run = len(pd.read_csv(tmp_path / "clean" / "logs" / "fold_0.csv"))
    real_epoch, calls = loop._train_epoch, {"n": 0}

    class Killed(Exception):
        pass

    def dies_after_fold_0(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n_run + 1:  # the first epoch of fold 1
            raise Killed
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", dies_after_fold_0)
    with pytest.raises(Killed):
        _train(small_cohort, small_graphs, tmp_path / "killed", patience=0.2)
    # fold 0 finished and was exported; forget its ledger mark so it is read again
    (tmp_path / "killed" / "checkpoints" / "fold_0.done.json").unlink()
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    calls["n"] = 0
    counted = {"n": 0}

    def counting(*args, **kwargs):
        counted["n"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", counting)
    resumed = _train(small_cohort, small_graphs, tmp_path / "killed", patience=0.2)
    n_fold_1 = len(pd.read_csv(tmp_path / "clean" / "logs" / "fold_1.csv"))
    assert counted["n"] == n_fold_1  # fold 0 trained no further epoch
    pd.testing.assert_frame_equal(resumed.risks, clean.risks)


def test_epochs_before_start_are_not_scored(small_cohort, small_graphs, tmp_path):
    """They cannot be chosen, so the validation pass is skipped: their log rows are empty
    there, every later row is scored, and the chosen epoch is an eligible one."""
    _train(small_cohort, small_graphs, tmp_path)
    log = pd.read_csv(tmp_path / "logs" / "fold_0.csv")
    assert log["inner_val_c_index"].iloc[:3].isna().all()
    assert log["inner_val_loss"].iloc[3:].notna().all()
    state = torch.load(tmp_path / "checkpoints" / "fold_0.pt", weights_only=False)
    assert state["best"]["epoch"] >= 3
