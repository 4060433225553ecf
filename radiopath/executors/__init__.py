"""Where the units of a stage run: this process (``local``, the default) or Ray (``ray``).

Every stage that fans out takes an ``executor`` (a name, a mapping, an
:class:`ExecutorConfig` or an open :class:`Executor`) and hands its units to it:

========== ================================================ ===================================
stage      unit                                             where it is used
========== ================================================ ===================================
extract    one slide or CT volume (an actor per worker       :func:`radiopath.extract.extract_cohort`
           holds the encoders: weights load once)
graphs     one embedding file (bag)                         :func:`radiopath.graph.build_cohort_graphs`
train      one fold of one aggregator                       :func:`radiopath.training.train_cross_validated`
evaluate   one (model, fold) fit; the torch backend's        :func:`radiopath.evaluation.evaluate_folds`
           batched models: one model over all folds
sweep      one grid point (a whole benchmark)               :func:`radiopath.sweep.run_sweep`
========== ================================================ ===================================

A run on Ray writes the same files as a local one, by the same code: a unit reads its
inputs from paths, writes its outputs itself through :mod:`radiopath.runkit` (atomically)
and returns a small summary; finished units are skipped on resume by the stage before
anything is submitted. ``ray`` is an optional dependency (``pip install "radiopath[ray]"``),
imported only when chosen.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

from radiopath.errors import RadiopathInputError
from radiopath.executors.base import Done, Executor, ExecutorError, LocalExecutor
from radiopath.executors.config import (
    DEFAULTS,
    EXECUTORS,
    ExecutorConfig,
    resolve_executor_config,
)

__all__ = [
    "DEFAULTS",
    "EXECUTORS",
    "Done",
    "Executor",
    "ExecutorConfig",
    "ExecutorError",
    "ExecutorArg",
    "LocalExecutor",
    "borrowed",
    "check_executor_available",
    "open_executor",
    "resolve_executor_config",
]

ExecutorArg = Executor | ExecutorConfig | Mapping | str | None
"""What a stage's ``executor`` argument takes (see :func:`open_executor`)."""


def check_executor_available(config: ExecutorConfig) -> None:
    """Refuse an executor whose package is missing, before any work (naming the package)."""
    if config.name == "ray" and importlib.util.find_spec("ray") is None:
        raise RadiopathInputError(
            "the ray executor needs the 'ray' package, which is not installed; "
            'install it with pip install "radiopath[ray]" (or pip install "ray==2.60.0")',
            field="executor",
        )


def open_executor(executor: ExecutorArg = None) -> Executor:
    """An executor ready to run units (connected to Ray, for ``ray``).

    Use as a context manager; an :class:`Executor` passed in is returned as it is (its
    owner closes it)::

        with open_executor({"name": "ray", "address": "auto"}) as ex:
            build_cohort_graphs(cohort, out, executor=ex)

    Raises
    ------
    RadiopathInputError
        A bad setting, a missing ``ray`` package, or an address no cluster answers on.
    """
    if isinstance(executor, Executor):
        return executor
    config = resolve_executor_config(executor)
    check_executor_available(config)
    if config.name == "local":
        return LocalExecutor(config)
    from radiopath.executors.ray_executor import RayExecutor

    return RayExecutor(config)


class borrowed:
    """``with borrowed(arg) as ex``: open an executor for the block, unless ``arg`` is one
    already open (then it is used and left open for its owner)."""

    def __init__(self, executor: ExecutorArg) -> None:
        self._arg = executor
        self._owned: Executor | None = None

    def __enter__(self) -> Executor:
        ex = open_executor(self._arg)
        if ex is not self._arg:
            self._owned = ex
        return ex

    def __exit__(self, *exc) -> None:
        if self._owned is not None:
            self._owned.close()
