"""radiopath.training.memory: glibc malloc tuning for repeated large tensors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def test_tune_cpu_malloc_stops_page_faults_on_repeated_large_tensors():
    """In a fresh process: allocating and freeing 200 MB tensors faults in new pages every
    time with glibc's defaults and reuses the heap after tuning."""

    from radiopath.training.memory import _glibc

    if _glibc() is None:
        pytest.skip("not glibc")
    script = textwrap.dedent(
        """
        import resource, sys, torch
        from radiopath.training.memory import tune_cpu_malloc
        if sys.argv[1] == "tuned":
            assert tune_cpu_malloc()
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):  # warm-up: the heap settles at its working size
            torch.ones(50_000_000).sum()
        before = faults()
        for _ in range(5):
            torch.ones(50_000_000).sum()
        print(faults() - before)
        """
    )
    counts = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for mode in ("default", "tuned")
    }
    assert counts["default"] > 5 * 40_000  # 200 MB = ~49k pages per tensor, every time
    assert counts["tuned"] < 40_000  # reused: not even one tensor's pages in 5 rounds
