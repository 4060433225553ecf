"""radiopath.training.memory: glibc malloc tuning for repeated large tensors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def test_tune_cpu_malloc_stops_page_faults_on_repeated_large_tensors():
    """In a fresh process: allocating and freeing 200 MB tensors faults in new pages every
    time with glibc's defaults and reuses the heap after tuning.

    The tuned heap can still grow once or twice while small allocations settle around the
    freed block (seen in about one run in three: one or two rounds of faults, then none;
    once, with other tests running beside it, in the eighth of twelve rounds), so each round
    is counted: every default round faults the tensor in, at most two tuned rounds do.
    """

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
        for _ in range(3):  # warm-up
            torch.ones(50_000_000).sum()
        for _ in range(12):
            before = faults()
            torch.ones(50_000_000).sum()
            print(faults() - before)
        """
    )
    rounds = {
        mode: [
            int(v)
            for v in subprocess.run(
                [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
            ).stdout.split()
        ]
        for mode in ("default", "tuned")
    }
    assert len(rounds["default"]) == len(rounds["tuned"]) == 12
    # 200 MB = ~49k pages: with glibc's defaults every round faults them in again
    assert min(rounds["default"]) > 40_000, rounds["default"]
    # tuned: the freed block is reused; at most two of the twelve rounds fault a tensor in
    assert sum(r > 40_000 for r in rounds["tuned"]) <= 2, rounds["tuned"]
    assert sum(rounds["tuned"]) < 3 * 40_000, rounds["tuned"]
