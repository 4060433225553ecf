"""Fault injection for run folders: kill a command at a chosen moment, damage a finished
file, and compare the outputs of two runs file by file.

Used by ``tests/e2e/test_fault_injection.py`` and ``benchmarks/bench_faults.py`` to show that a
run resumed after a SIGKILL, a truncated file or a full disk ends with the same tables as
one that was never interrupted.

    >>> cmd = radiopath_command("benchmark", "--cohort", csv, "--out", out)   # doctest: +SKIP
    >>> killed_at = run_and_kill(cmd, delay=12.0)                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from radiopath.runkit import Ledger

#: What a run's reader uses: the merged tables and every importance map.
COMPARED = ("metrics.csv", "predictions.csv", "survival.csv", "selection.csv")


def radiopath_command(*args) -> list[str]:
    """``python -m radiopath ARGS`` with this interpreter (no reliance on ``PATH``)."""
    return [sys.executable, "-m", "radiopath", *(str(a) for a in args)]


@dataclass
class Outcome:
    returncode: int
    seconds: float
    killed: bool
    stderr: str


def run_and_kill(
    cmd: Sequence[str], delay: float | None = None, file_size_limit: int | None = None
) -> Outcome:
    """Run ``cmd``; after ``delay`` seconds (if still running) send SIGKILL to its whole
    process group (workers included), as a scheduler preempting the job would.
    ``file_size_limit`` (bytes) caps every file the process writes (``RLIMIT_FSIZE``), the
    way a nearly full disk fails a write."""

    def limit():  # runs in the child before exec
        os.setsid()
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    tic = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
        env=env,
    )
    killed = False
    try:
        _, err = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        killed = True
    return Outcome(proc.returncode, time.perf_counter() - tic, killed, err or "")


def truncate(path: str | os.PathLike, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its size (at least one byte less than it was)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(min(int(size * keep), max(size - 1, 0)))


def output_files(run_dir: str | os.PathLike) -> dict[str, bytes]:
    """The bytes of a run's compared files: :data:`COMPARED` and ``importance/**.csv``."""
    run_dir = Path(run_dir)
    files = [run_dir / n for n in COMPARED if (run_dir / n).exists()]
    files += sorted((run_dir / "importance").rglob("*.csv"))
    return {str(f.relative_to(run_dir)): f.read_bytes() for f in files}


def differences(a: str | os.PathLike, b: str | os.PathLike) -> list[str]:
    """The compared files that differ between two run folders (missing on one side, or
    not byte-identical); empty when the runs agree to the bit."""
    fa, fb = output_files(a), output_files(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


def stage_at(run_dir: str | os.PathLike) -> str:
    """Where a killed run had got to: the last finished stage and, inside training, the
    fold and ensemble-member checkpoints written so far (for the fault table)."""
    run_dir = Path(run_dir)
    done = list(Ledger(run_dir / "stages.json").units())  # radiopath.benchmark.stage_ledger
    where = f"after {done[-1]}" if done else "graphs"
    ckpts = sorted(p.name for p in (run_dir / "runs").glob("*/checkpoints/fold_*.pt"))
    finished = sorted(p.name for p in (run_dir / "runs").glob("*/checkpoints/fold_*.done.json"))
    if ckpts:
        where += f" ({len(ckpts)} checkpoints, {len(finished)} folds done)"
    return where
