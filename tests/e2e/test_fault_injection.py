"""A real process killed with SIGKILL at several moments of a benchmark, then resumed by the
same command, ends with byte-identical tables and importance maps; so does a run that hit a
full disk. (benchmarks/bench_faults.py runs the 20-seed version.)"""

from __future__ import annotations

import pytest

from radiopath.faults import differences, radiopath_command, run_and_kill, stage_at

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bench(small_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    args = [
        "benchmark", "--cohort", small_cohort, "--aggregators", "sparra,mean",
        "--models", "coxph", "--folds", 2, "--epochs", 3, "--seed", 3,
        "--backend", "torch", "--bootstrap", 20,
    ]  # fmt: skip

    def cmd(out):
        return radiopath_command(*args, "--out", out)

    ref = run_and_kill(cmd(root / "reference"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    return root, cmd, ref.seconds


@pytest.mark.parametrize("fraction", [0.3, 0.55, 0.8])
def test_sigkill_then_resume_is_bit_identical(bench, fraction):
    root, cmd, seconds = bench
    out = root / f"kill_{fraction}"
    run_and_kill(cmd(out), delay=fraction * seconds)
    where = stage_at(out)
    resumed = run_and_kill(cmd(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert differences(root / "reference", out) == [], f"killed {where}"


def test_full_disk_fails_naming_a_path_and_resumes_identically(bench):
    root, cmd, _ = bench
    out = root / "disk_full"
    full = run_and_kill(cmd(out), file_size_limit=16 * 1024)
    assert full.returncode != 0
    assert "could not write" in full.stderr and str(out) in full.stderr
    resumed = run_and_kill(cmd(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert differences(root / "reference", out) == []
