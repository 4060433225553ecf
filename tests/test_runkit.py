"""File names from patient IDs (one rule for every stage, no two IDs on one name), the
configuration and file fingerprints, the ledger of finished units, one writer per run folder
(RunLock) and atomic writes that leave the old file when writing fails."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from multiprocessing import get_context

import pytest

import radiopath.runkit as runkit
from radiopath.config import RunRecord
from radiopath.runkit import (
    Ledger,
    RunLock,
    RunLockedError,
    atomic_path,
    config_fingerprint,
    file_fingerprint,
    file_identity,
    safe_filename,
    write_text,
)


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


def test_config_fingerprint_is_canonical():
    a = {"b": 1, "a": {"y": [1, 2], "x": "s"}}
    b = {"a": {"x": "s", "y": [1, 2]}, "b": 1}
    assert config_fingerprint(a) == config_fingerprint(b)
    assert len(config_fingerprint(a)) == 16
    assert config_fingerprint(a) != config_fingerprint({**a, "b": 2})
    assert config_fingerprint({**a, "threads": 4}, exclude=("threads",)) == config_fingerprint(a)
    assert config_fingerprint({"p": os.sep}) == config_fingerprint({"p": str(os.sep)})


def test_file_fingerprint_changes_when_a_file_or_folder_is_rewritten(tmp_path):
    f = tmp_path / "series" / "a.dcm"
    f.parent.mkdir()
    f.write_bytes(b"12345")
    before, folder = file_fingerprint(f), file_fingerprint(f.parent)
    assert file_fingerprint(f) == before
    st = f.stat()
    f.write_bytes(b"54321")  # same size, another modification time
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert file_fingerprint(f) != before and file_fingerprint(f.parent) != folder
    (f.parent / "b.dcm").write_bytes(b"x")
    assert file_fingerprint(f.parent).startswith("2:")
    assert file_identity(None) is None
    assert file_identity(f) == {"path": str(f.resolve()), "fingerprint": file_fingerprint(f)}


@pytest.fixture(params=["one_file", "per_unit"])
def ledger(request, tmp_path):
    if request.param == "one_file":
        return Ledger(tmp_path / "stages.json")
    return Ledger.per_unit(tmp_path / "done", "unit_{}.json", root=tmp_path)


def test_a_marked_unit_is_finished_with_the_same_config_only(ledger, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("a,b\n1,2\n")
    assert not ledger.finished("u", {"k": 1})
    record = ledger.mark("u", {"k": 1}, [out], seconds=1.5)
    assert record["outputs"] == {"out.csv": runkit.file_digest(out)}
    assert ledger.record("u")["seconds"] == 1.5 and ledger.outputs("u") == record["outputs"]
    assert ledger.finished("u", {"k": 1})
    assert not ledger.finished("u", {"k": 2})  # a changed configuration
    assert not ledger.finished("v", {"k": 1})


def test_a_truncated_or_removed_output_is_not_finished(ledger, tmp_path, caplog):
    out = tmp_path / "out.csv"
    out.write_text("a,b\n1,2\n")
    ledger.mark("u", {"k": 1}, [out])
    out.write_text("a,b\n")
    with caplog.at_level("WARNING"):
        assert not ledger.finished("u", {"k": 1})
    assert "out.csv missing, truncated or changed" in caplog.text
    out.unlink()
    assert not ledger.finished("u", {"k": 1})


def test_units_keep_each_others_records(ledger, tmp_path):
    for unit in ("a", "b/c", 3):
        ledger.mark(unit, {"unit": str(unit)})
    reopened = (
        Ledger(ledger.path)
        if ledger.pattern is None
        else Ledger.per_unit(ledger.path, "unit_{}.json")
    )
    for unit in ("a", "b/c", 3):
        assert reopened.finished(unit, {"unit": str(unit)})
    keys = (
        ["a", "b/c", "3"]
        if ledger.pattern is None
        else [safe_filename(u) for u in "a b/c 3".split()]
    )
    assert sorted(reopened.units()) == sorted(keys)
    if ledger.pattern is not None:  # one file per unit, a portable name each
        names = sorted(p.name for p in ledger.path.iterdir())
        assert names == sorted(f"unit_{safe_filename(u)}.json" for u in ("a", "b/c", "3"))


def test_a_damaged_record_is_not_trusted(ledger):
    ledger.mark("u", {"k": 1})
    ledger.record_path("u").write_text('{"u": {"config": ')
    assert ledger.record("u") is None and not ledger.finished("u", {"k": 1})
    ledger.mark("u", {"k": 1})
    assert ledger.finished("u", {"k": 1})


def test_a_kill_between_the_temporary_write_and_the_rename_keeps_the_old_record(
    ledger, monkeypatch
):
    ledger.mark("u", {"k": 1}, seconds=1)
    path = ledger.record_path("u")
    before = path.read_bytes()

    def killed(src, dst):  # the process dies after writing the temporary file
        raise KeyboardInterrupt

    monkeypatch.setattr(runkit.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ledger.mark("u", {"k": 2}, seconds=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert ledger.finished("u", {"k": 1}) and not ledger.finished("u", {"k": 2})
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _mark_in_a_process(folder, unit):
    Ledger.per_unit(folder, "unit_{}.json").mark(unit, {"unit": unit})


def test_per_unit_records_of_parallel_processes_are_all_kept(tmp_path):
    ctx = get_context("spawn")
    procs = [ctx.Process(target=_mark_in_a_process, args=(tmp_path, u)) for u in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = Ledger.per_unit(tmp_path, "unit_{}.json")
    assert all(ledger.finished(u, {"unit": u}) for u in range(4))
    assert json.loads((tmp_path / "unit_2.json").read_text())["config"] == config_fingerprint(
        {"unit": 2}
    )


def test_a_run_ledger_keeps_one_record_per_unit_under_checkpoints(tmp_path):
    (tmp_path / "embeddings").mkdir()
    npz = tmp_path / "embeddings" / "fold_0.npz"
    npz.write_bytes(b"x" * 10)
    ledger = runkit.run_ledger(tmp_path)
    ledger.mark("fold_0", {"k": 1}, ["embeddings/fold_0.npz"], n_test=3)
    record = json.loads((tmp_path / "checkpoints" / "fold_0.done.json").read_text())
    assert record["outputs"] == {"embeddings/fold_0.npz": runkit.file_digest(npz)}
    assert record["n_test"] == 3
    assert runkit.run_ledger(tmp_path).finished("fold_0", {"k": 1})


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


def test_write_columns_csv_writes_the_bytes_pandas_writes(tmp_path, monkeypatch):
    """The fast path (integer and float64 columns) against pandas' own output: NaN, signed
    zeros, infinities, tiny and huge magnitudes, big integers, no rows; other kinds of column
    (strings, float32, one column with a NaN) go through pandas and agree too."""
    import numpy as np
    import pandas as pd

    from radiopath.runkit import write_columns_csv, write_csv

    rng = np.random.default_rng(0)
    n = 500
    wide = rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)
    wide[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 1e16]
    cases = {
        "numbers": {
            "x": rng.integers(-(2**40), 2**40, n),
            "y": rng.integers(0, 500, n).astype(np.uint16),
            "importance": rng.random(n) / 7.0,
            "contribution": wide,
            "s_sd": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
        },
        "no rows": {"x": np.zeros(0, dtype=np.int64), "v": np.zeros(0)},
        "strings": {"x": np.arange(3), "source": np.array(["a.h5", "b,c.h5", "d"])},
        "float32": {"x": np.arange(4), "v": np.linspace(0, 1, 4, dtype=np.float32)},
        "one column": {"v": np.array([np.nan, 1.5, 2.0])},
    }
    import radiopath.runkit as runkit

    for name, columns in cases.items():
        if name in ("numbers", "no rows"):  # the fast path: pandas is not called
            with monkeypatch.context() as patch:
                patch.setattr(runkit, "write_csv", None)
                write_columns_csv(columns, tmp_path / f"{name}.fast.csv")
        else:
            write_columns_csv(columns, tmp_path / f"{name}.fast.csv")
        write_csv(pd.DataFrame(columns), tmp_path / f"{name}.pandas.csv")
        fast = (tmp_path / f"{name}.fast.csv").read_bytes()
        assert fast == (tmp_path / f"{name}.pandas.csv").read_bytes(), name
    back = pd.read_csv(tmp_path / "numbers.fast.csv", float_precision="round_trip")
    np.testing.assert_array_equal(back["contribution"].to_numpy(), cases["numbers"]["contribution"])
