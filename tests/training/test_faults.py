"""Faults survived: one writer per run folder, partial files detected and recomputed, atomic
writes that leave the old file when writing fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from radiopath.config import RunRecord
from radiopath.runkit import RunLock, RunLockedError, atomic_path, verify_digests, write_text
from radiopath.training import train_cross_validated

FAST = {"epochs": 2, "n_folds": 2, "batch_size": 8, "hidden": 16}

HOLD = textwrap.dedent(
    """
    import sys, time
    from radiopath.runkit import RunLock
    with RunLock(sys.argv[1], command="holder"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def _holder(folder):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_and_a_dead_owner_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(RunLockedError) as err:
            with RunRecord(tmp_path, command="train", config={}, seed=0):
                pass
        message = str(err.value)
        assert str(tmp_path) in message and f"pid {proc.pid}" in message and "holder" in message
        assert not (tmp_path / "run.json").exists()  # refused before anything was written
    finally:
        proc.kill()  # SIGKILL: no clean-up, the lock file stays behind
        proc.wait()
    assert (tmp_path / ".radiopath.lock").exists()
    with RunRecord(tmp_path, command="train", config={}, seed=0) as run:
        owner = json.loads((tmp_path / ".radiopath.lock").read_text())
        assert owner["pid"] == os.getpid()
        run.update(results={"ok": 1})
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"


def test_lock_is_reentrant_within_a_process(tmp_path):
    with RunLock(tmp_path, "outer"):
        with RunLock(tmp_path, "inner"):
            pass
        # still held by the outer block: another process is refused
        probe = subprocess.run(
            [sys.executable, "-c", HOLD, str(tmp_path)], capture_output=True, text=True
        )
        assert probe.returncode != 0 and "another radiopath run" in probe.stderr
    proc = _holder(tmp_path)  # released: another process can take it
    proc.kill()
    proc.wait()


def test_failed_atomic_write_keeps_the_old_file_and_names_the_path(tmp_path):
    target = tmp_path / "metrics.csv"
    write_text(target, "old\n")
    with pytest.raises(OSError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert str(target) in str(err.value)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temporary left


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_names_the_path(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError) as err:
            write_text(folder / "run.json", "{}")
        assert str(folder / "run.json") in str(err.value)
    finally:
        folder.chmod(0o755)


@pytest.fixture()
def finished_run(small_cohort, small_graphs, tmp_path):
    def run(**kw):
        return train_cross_validated(
            small_cohort,
            small_graphs,
            aggregator="abmil",
            modalities="wsi",
            out_dir=tmp_path,
            config=FAST,
            progress=False,
            **kw,
        )

    return run, tmp_path


def test_truncated_export_of_a_finished_fold_is_written_again(finished_run, caplog):
    run, out = finished_run
    first = run()
    done = json.loads((out / "checkpoints" / "fold_0.done.json").read_text())
    assert "embeddings/fold_0.npz" in done["outputs"]
    assert any(k.startswith("importance/abmil/") for k in done["outputs"])
    npz = out / "embeddings" / "fold_0.npz"
    before = npz.read_bytes()
    npz.write_bytes(before[: len(before) // 2])
    imp = next(out / k for k in done["outputs"] if k.startswith("importance/"))
    imp_before = imp.read_text()
    imp.write_text(imp_before[:40])
    with caplog.at_level("WARNING"):
        again = run()
    assert "missing, truncated or changed" in caplog.text and "fold_0.npz" in caplog.text
    assert npz.read_bytes() == before and imp.read_text() == imp_before
    assert verify_digests(out, done["outputs"]) == []
    pd.testing.assert_frame_equal(again.risks, first.risks)
    # the log was not extended: the model came from the checkpoint, not retraining
    assert pd.read_csv(out / "logs" / "fold_0.csv")["epoch"].tolist() == [0, 1]


def test_corrupt_checkpoint_is_reported_and_the_fold_retrained(finished_run, caplog):
    run, out = finished_run
    first = run()
    ckpt = out / "checkpoints" / "fold_1.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    (out / "checkpoints" / "fold_1.done.json").unlink()
    with caplog.at_level("WARNING"):
        again = run()
    assert "fold_1.pt is unreadable" in caplog.text
    assert (out / "checkpoints" / "fold_1.pt.corrupt").exists()
    pd.testing.assert_frame_equal(again.risks, first.risks)  # retrained to the same result


def test_corrupt_ledger_is_not_trusted(finished_run):
    run, out = finished_run
    first = run()
    (out / "checkpoints" / "fold_0.done.json").write_text('{"fold": 0, "test_c')
    again = run()
    assert json.loads((out / "checkpoints" / "fold_0.done.json").read_text())["fold"] == 0
    pd.testing.assert_frame_equal(again.risks, first.risks)


def test_interrupted_evaluation_resumes_from_finished_units(finished_run, monkeypatch, tmp_path):
    import shutil

    import radiopath.evaluation.units as units
    from radiopath.evaluation import evaluate_run

    run, out = finished_run
    run()
    clean_dir = tmp_path.parent / (tmp_path.name + "_clean")
    shutil.copytree(out, clean_dir)
    models = ["coxph", "fsvm"]
    clean = evaluate_run(clean_dir, models=models, backend="sksurv")

    real_fit = units._fit_sksurv
    calls = []

    def dies_on_third(model, prep, cfg, seed):
        calls.append((model, prep.fold))
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the grid search
        return real_fit(model, prep, cfg, seed)

    monkeypatch.setattr(units, "_fit_sksurv", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(out, models=models, backend="sksurv")
    assert len(list((out / ".evaluation_units").glob("*.pkl"))) == 2
    calls.clear()
    resumed = evaluate_run(out, models=models, backend="sksurv")
    assert len(calls) == 2  # only the two units that had not finished
    assert not (out / ".evaluation_units").exists()
    pd.testing.assert_frame_equal(resumed.metrics, clean.metrics)
    pd.testing.assert_frame_equal(resumed.predictions, clean.predictions)
    for name in ("survival.csv", "selection.csv", "metrics.csv"):
        assert (out / name).read_bytes() == (clean_dir / name).read_bytes(), name
