"""Helpers of the executor tests: comparing two run folders file by file, and executors that
inject a fault at a unit's boundary (a worker killed, a run interrupted)."""

from __future__ import annotations

import functools
import io
import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.errors import RadiopathInputError
from radiopath.executors import Executor

#: Provenance, not results: start/end times, argv, the executor itself; the report page,
#: whose provenance section shows each stage's seconds (its tables and figures come from
#: files compared here).
PROVENANCE = {"run.json", ".radiopath.lock", "report.html"}
#: Tables and ledgers with a wall-time field: compared without it.
TIMED = {"seconds"}


def _untimed(value):
    """A JSON value without its ``seconds`` fields and the digests of provenance files
    (keys naming one), at any depth."""
    if isinstance(value, dict):
        return {
            k: _untimed(v)
            for k, v in value.items()
            if k not in TIMED and Path(k).name not in PROVENANCE
        }
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _files(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for p in root.rglob("*")
        if p.is_file() and p.name not in PROVENANCE
    }


def _read(path: Path, root: Path) -> bytes:
    """A file's bytes, its own folder's absolute path (which a report names) made neutral."""
    return path.read_bytes().replace(str(root.resolve()).encode(), b"<out>")


def _same_checkpoint(a, b) -> bool:
    """Two checkpoints holding equal values (a fold resumed mid-training writes the same
    tensors, optimiser state and generators, but torch may lay the storages out in
    another order)."""
    import torch

    def equal(x, y) -> bool:
        if isinstance(x, dict):
            return (
                isinstance(y, dict) and x.keys() == y.keys() and all(equal(x[k], y[k]) for k in x)
            )
        if isinstance(x, (list, tuple)):
            return type(x) is type(y) and len(x) == len(y) and all(map(equal, x, y))
        if torch.is_tensor(x):
            try:
                torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
            except (AssertionError, TypeError):
                return False
            return True
        if isinstance(x, np.ndarray):
            return np.array_equal(x, y)
        return x == y or (x != x and y != y)

    load = functools.partial(torch.load, map_location="cpu", weights_only=False)
    return equal(load(a), load(b))


def tree_differences(a, b) -> list[str]:
    """Files that differ between two run folders: present on one side only, or not the same
    bytes (where a file names its own output folder, that folder's path is set aside); a
    CSV with a ``seconds`` column (epoch logs, extraction report) is compared without that
    column, a JSON file (the stage ledger) without its ``seconds`` fields, a checkpoint by
    its values, to exact equality of everything else."""
    a, b = Path(a), Path(b)
    fa, fb = _files(a), _files(b)
    bad = sorted(set(fa) ^ set(fb))
    for rel in sorted(set(fa) & set(fb)):
        if fa[rel].read_bytes() == fb[rel].read_bytes() or _read(fa[rel], a) == _read(fb[rel], b):
            continue
        if rel.endswith(".csv"):
            ta = pd.read_csv(io.BytesIO(_read(fa[rel], a)))
            tb = pd.read_csv(io.BytesIO(_read(fb[rel], b)))
            timed = [c for c in ta.columns if c in TIMED]
            if timed and ta.drop(columns=timed).equals(tb.drop(columns=timed)):
                continue
        if rel.endswith(".pt") and _same_checkpoint(fa[rel], fb[rel]):
            continue
        if rel.endswith(".json"):
            raw = [json.loads(fa[rel].read_bytes()), json.loads(fb[rel].read_bytes())]
            neutral = [json.loads(_read(f, root)) for f, root in ((fa[rel], a), (fb[rel], b))]
            if any(_untimed(x) == _untimed(y) for x, y in (raw, neutral)):
                continue
        bad.append(rel)
    return bad


def _die_once(marker: str, after: bool, fn, *args, **kwargs):
    """Run ``fn``; the first call anywhere (``marker`` absent) kills its own worker
    process with SIGKILL, before ``fn`` or after it (its outputs written, its result never
    returned)."""
    first = not os.path.exists(marker)
    if first and not after:
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    value = fn(*args, **kwargs)
    if first and after:
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def _counted(log: str, fn, *args, **kwargs):
    with open(log, "a") as f:
        f.write("call\n")
    return fn(*args, **kwargs)


class Wrapped(Executor):
    """An open executor whose units go through ``wrap(fn)``; counts what is submitted and
    can stop the caller after ``stop_after`` units (a run interrupted as a whole)."""

    def __init__(self, inner: Executor, wrap=None, stop_after: int | None = None) -> None:
        super().__init__(inner.config)
        self.inner, self.wrap, self.stop_after = inner, wrap, stop_after
        self.submitted = 0
        self.remote = inner.remote

    def map_unordered(self, fn, tasks, *, shared=None, setup=None):
        self.submitted += len(tasks)
        fn = self.wrap(fn) if self.wrap else fn
        for n, done in enumerate(self.inner.map_unordered(fn, tasks, shared=shared, setup=setup)):
            yield done
            if self.stop_after is not None and n + 1 >= self.stop_after:
                raise KeyboardInterrupt("interrupted by the test")


def dies_once(marker, after: bool = False):
    return lambda fn: functools.partial(_die_once, str(marker), after, fn)


def counted(log):
    return lambda fn: functools.partial(_counted, str(log), fn)


# units of the executor tests


def square(x, offset=0):
    if x < 0:
        raise RadiopathInputError("negative input", field="x")
    return x * x + offset


def make_state(base):
    return {"base": base, "pid": os.getpid()}


def with_state(state, x):
    return state["base"] + x, state["pid"]
