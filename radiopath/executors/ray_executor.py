"""The Ray executor: the units of a stage as Ray tasks (or actors) on one machine or a cluster.

Imported only when ``executor: ray`` is chosen (``radiopath`` itself never imports Ray).

* **Connecting.** ``address`` None and no ``RAY_ADDRESS``: a Ray instance is started here
  with ``workers`` CPUs (all cores by default) and shut down at the end; ``auto``: the
  cluster this machine belongs to (``ray start`` ran here); ``HOST:PORT`` or
  ``ray://HOST:PORT``: that cluster (checked reachable first, so a wrong address is named
  at once instead of after Ray's own connection timeout). When Ray is already initialised
  in this process (a notebook, a test) that session is used and left running.
* **Units.** Each unit is a task with ``num_cpus=cpus_per_task``, ``num_gpus=gpus_per_task``,
  ``max_retries`` (a unit whose worker process died is re-run) and
  ``retry_exceptions=False`` (a unit that raised, e.g. on a bad input file, is reported once,
  never retried). With a ``setup`` (extraction) the units go to one actor per worker holding
  the state (``max_restarts`` / ``max_task_retries`` = ``max_retries``), so encoder weights
  load once per worker, and on a GPU cluster one actor per device.
* **Data.** ``shared`` objects go into the object store once (``ray.put``) and reach every
  task as a reference, not pickled into each task's arguments; the tasks themselves carry
  paths and small records. Results are written by the unit that made them.
* **Progress.** Units are collected with ``ray.wait`` as they finish, so the caller's one
  progress bar moves with the remote workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import ray
import ray.exceptions

from radiopath.errors import RadiopathInputError
from radiopath.executors.base import Done, Executor, ExecutorError
from radiopath.executors.config import ExecutorConfig

log = logging.getLogger(__name__)


def _call(fn, task, **shared):
    return fn(*task, **shared)


class _StatefulWorker:
    """An actor: builds its state once (``setup(**shared)``), then runs units against it."""

    def __init__(self, setup, **shared) -> None:
        self.state = setup(**shared)

    def run(self, fn, task):
        return fn(self.state, *task)


def _host_port(address: str) -> tuple[str, int]:
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RadiopathInputError(
            f"cannot read {address!r} as HOST:PORT or ray://HOST:PORT", field="executor.address"
        )
    return host, int(port)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse an address nothing answers on, naming it (Ray itself would retry for long)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise RadiopathInputError(
            f"cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); start one "
            "with `ray start --head` on that machine, or fix --address / RAY_ADDRESS",
            field="executor.address",
        ) from exc


def connect(config: ExecutorConfig) -> bool:
    """Connect to (or start) Ray as ``config`` says; True when this call started it."""
    address = config.address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto", "local"):
        check_reachable(address)
    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "logging_level": logging.WARNING}
    try:
        if address is None:  # "local": a new instance even where a cluster runs here already
            ray.init(address="local", num_cpus=config.workers, **options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as exc:
        raise RadiopathInputError(
            f"cannot connect to a Ray cluster at {address!r} ({exc}); start one with "
            "`ray start --head`, or fix --address / RAY_ADDRESS",
            field="executor.address",
        ) from exc
    return True


def _cancel(pending) -> None:
    """Cancel the units not finished (the caller stopped early); a unit that finished
    meanwhile is left alone."""
    for ref in pending:
        with contextlib.suppress(ray.exceptions.RayError, ValueError, TypeError):
            ray.cancel(ref)


class RayExecutor(Executor):
    """Units as Ray tasks or actors (see the module docstring)."""

    remote = True

    def __init__(self, config: ExecutorConfig) -> None:
        super().__init__(config)
        self._started = connect(config)

    def close(self) -> None:
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    def _capacity(self, n_tasks: int) -> int:
        """Units in flight at once: ``workers``, or as many as the cluster's CPUs (GPUs,
        for GPU units) hold."""
        if self.config.workers:
            return max(1, min(self.config.workers, n_tasks))
        resources = ray.cluster_resources()
        if self.config.gpus_per_task > 0:
            slots = resources.get("GPU", 0) / self.config.gpus_per_task
        else:
            slots = resources.get("CPU", 1) / max(self.config.cpus_per_task, 1e-3)
        return max(1, min(int(slots), n_tasks))

    def _resources(self) -> dict:
        return {"num_cpus": self.config.cpus_per_task, "num_gpus": self.config.gpus_per_task}

    def map_unordered(self, fn, tasks, *, shared=None, setup=None) -> Iterator[Done]:
        if not tasks:
            return
        refs = {k: ray.put(v) for k, v in (shared or {}).items()}
        if setup is None:
            yield from self._tasks(fn, tasks, refs)
        else:
            yield from self._actors(fn, tasks, refs, setup)

    def _tasks(self, fn, tasks, refs) -> Iterator[Done]:
        remote = ray.remote(_call).options(
            **self._resources(), max_retries=self.config.max_retries, retry_exceptions=False
        )
        limit = self._capacity(len(tasks))
        pending: dict = {}
        queue = iter(enumerate(tasks))
        try:
            for i, task in queue:
                pending[remote.remote(fn, task, **refs)] = i
                if len(pending) >= limit:
                    break
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                yield self._collect(pending.pop(ready), ready)
                for i, task in queue:
                    pending[remote.remote(fn, task, **refs)] = i
                    break
        finally:
            _cancel(pending)

    def _actors(self, fn, tasks, refs, setup) -> Iterator[Done]:
        retries = self.config.max_retries
        cls = ray.remote(_StatefulWorker).options(
            **self._resources(), max_restarts=retries, max_task_retries=retries
        )
        actors = [cls.remote(setup, **refs) for _ in range(self._capacity(len(tasks)))]
        idle = list(actors)
        pending: dict = {}
        queue = iter(enumerate(tasks))
        try:
            while True:
                while idle:
                    nxt = next(queue, None)
                    if nxt is None:
                        break
                    actor = idle.pop()
                    pending[actor.run.remote(fn, nxt[1])] = (nxt[0], actor)
                if not pending:
                    break
                [ready], _ = ray.wait(list(pending), num_returns=1)
                i, actor = pending.pop(ready)
                idle.append(actor)
                yield self._collect(i, ready)
        finally:
            _cancel(pending)
            for actor in actors:
                ray.kill(actor)

    def _collect(self, index: int, ref) -> Done:
        try:
            return Done(index, ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return Done(index, error=cause)
        except ray.exceptions.RayError as exc:
            raise ExecutorError(
                f"unit {index} could not finish on Ray after {self.config.max_retries} "
                f"retries ({type(exc).__name__}: {exc}); what finished is kept, run again "
                "to resume"
            ) from exc
