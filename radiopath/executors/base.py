"""The executor interface, and the local executor (this process, or a pool of processes).

A stage that fans out hands its units to :meth:`Executor.map_unordered` and handles each
:class:`Done` as it arrives, in whatever order the units finish::

    for done in executor.map_unordered(build_one, [(job, out) for job in jobs]):
        try:
            results[done.index] = done.result()   # the unit's own exception, re-raised
        except RadiopathInputError as exc:
            report_and_skip(jobs[done.index], exc)
        bar.update()

Where a unit runs never changes what it computes: a unit reads its inputs from paths (or
from ``shared`` objects, sent to each worker once), writes its outputs itself, atomically,
and returns a small summary. A unit's exception (a bad input file) is the stage's to report;
a worker that dies is the executor's (Ray re-runs the unit, the local pool cannot), and
an executor that cannot go on raises :class:`ExecutorError`.
"""

from __future__ import annotations

import abc
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from radiopath.executors.config import ExecutorConfig


class ExecutorError(RuntimeError):
    """The executor could not run a unit to its end (its worker died more often than
    ``max_retries``, the pool broke, the cluster went away): a fault of the machines, not of
    the input; what finished is kept and a rerun resumes."""


@dataclass
class Done:
    """One finished unit: ``index`` is its position in the submitted tasks."""

    index: int
    value: object = None
    error: BaseException | None = None

    def result(self):
        """The unit's return value, or its exception raised again."""
        if self.error is not None:
            raise self.error
        return self.value


class Executor(abc.ABC):
    """Runs the units of a stage. See the module docstring for the contract."""

    #: Units run in other processes (they share no memory with the caller).
    remote: bool = False

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @abc.abstractmethod
    def map_unordered(
        self,
        fn: Callable,
        tasks: Sequence[tuple],
        *,
        shared: Mapping[str, object] | None = None,
        setup: Callable | None = None,
    ) -> Iterator[Done]:
        """Run ``fn(*task, **shared)`` for every task; yield a :class:`Done` per task as it
        finishes.

        With ``setup``, each worker first builds ``state = setup(**shared)`` once (an
        encoder with its weights, say) and then runs ``fn(state, *task)`` for the tasks it
        is given. ``fn`` and ``setup`` must be module-level functions (they are sent to the
        workers by reference). Closing the iterator early cancels what has not finished.
        """

    def close(self) -> None:  # noqa: B027 - most executors hold nothing to release
        """Release what the executor holds (a Ray instance it started)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# ----------------------------------------------------------------------------- local

_state = None  # a pool worker's state, built once by _init_worker


def _init_worker(threads: int, setup: Callable | None, shared: Mapping) -> None:
    import torch

    # one process per core: each single-threaded so the workers do not oversubscribe
    torch.set_num_threads(threads)
    global _state
    if setup is not None:
        _state = setup(**shared)


def _call(fn: Callable, task: tuple, shared: Mapping):
    return fn(*task, **shared)


def _call_with_state(fn: Callable, task: tuple):
    return fn(_state, *task)


class LocalExecutor(Executor):
    """Units in this process, one after the other (``workers`` None or 1, the default), or
    in a pool of ``workers`` spawned processes.

    The pool is kept from one stage to the next while the executor is open (spawning a
    process and importing torch costs seconds, and a worker's graph store stays warm); a
    stage whose workers build a state of their own (``setup``) gets a pool of its own."""

    _kept: ProcessPoolExecutor | None = None

    def map_unordered(self, fn, tasks, *, shared=None, setup=None) -> Iterator[Done]:
        shared = dict(shared or {})
        workers = self.config.workers or 1
        if workers == 1 or len(tasks) <= 1:
            yield from self._in_process(fn, tasks, shared, setup)
        else:
            yield from self._pool(fn, tasks, shared, setup, min(workers, len(tasks)))

    @property
    def remote(self) -> bool:  # type: ignore[override]
        return (self.config.workers or 1) > 1

    @staticmethod
    def _in_process(fn, tasks, shared, setup) -> Iterator[Done]:
        state = setup(**shared) if setup is not None and tasks else None
        for i, task in enumerate(tasks):
            try:
                value = fn(state, *task) if setup is not None else fn(*task, **shared)
            except Exception as exc:  # the unit's error: the stage decides (skip or stop)
                yield Done(i, error=exc)
            else:
                yield Done(i, value)

    def _new_pool(self, workers: int, setup, shared) -> ProcessPoolExecutor:
        threads = max(1, int(self.config.cpus_per_task))
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(threads, setup, shared if setup is not None else {}),
        )

    def _pool(self, fn, tasks, shared, setup, workers) -> Iterator[Done]:
        if setup is not None:
            with self._new_pool(workers, setup, shared) as pool:
                yield from self._run(pool, fn, tasks, shared, setup)
            return
        if self._kept is None:
            self._kept = self._new_pool(int(self.config.workers), None, {})
        try:
            yield from self._run(self._kept, fn, tasks, shared, None)
        except ExecutorError:  # a worker died: the next stage starts a new pool
            self.close()
            raise

    def close(self) -> None:
        """Shut the kept pool down (its workers finish what they run)."""
        if self._kept is not None:
            self._kept.shutdown(wait=True, cancel_futures=True)
            self._kept = None

    @staticmethod
    def _run(pool, fn, tasks, shared, setup) -> Iterator[Done]:
        if setup is not None:
            futures = {pool.submit(_call_with_state, fn, t): i for i, t in enumerate(tasks)}
        else:
            futures = {pool.submit(_call, fn, t, shared): i for i, t in enumerate(tasks)}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = futures[future]
                    try:
                        value = future.result()
                    except BrokenProcessPool as exc:
                        raise ExecutorError(f"a worker process died ({exc})") from exc
                    except Exception as exc:
                        yield Done(i, error=exc)
                    else:
                        yield Done(i, value)
        finally:
            for future in pending:
                future.cancel()
