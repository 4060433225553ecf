"""The ``executor`` setting: where the units of a stage that fans out run.

Accepted forms (the command line's ``--executor NAME [--address A]`` and a configuration's
``executor:`` key build the same mapping)::

    executor: local                      # today's behaviour: this process (or a local pool)
    executor: ray                        # a local Ray instance, or the one RAY_ADDRESS names
    executor:
      name: ray
      address: auto                      # auto | HOST:PORT | ray://HOST:PORT
      workers: 8                         # units in flight at once (default: what fits)
      cpus_per_task: 1
      gpus_per_task: 1                   # extraction actors / training folds on a GPU each
      max_retries: 3                     # re-runs of a unit whose worker process died

The setting is checked here, before any work; whether Ray is installed and the address
reachable is checked when the executor is opened (:func:`radiopath.executors.open_executor`),
still before the first unit runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from radiopath.config import check_known_keys
from radiopath.errors import RadiopathInputError

EXECUTORS = ("local", "ray")

DEFAULTS: dict = {
    "name": "local",
    "address": None,
    "workers": None,
    "cpus_per_task": 1.0,
    "gpus_per_task": 0.0,
    "max_retries": 3,
}


@dataclass(frozen=True)
class ExecutorConfig:
    """A checked ``executor`` setting (see the module docstring for the keys).

    ``workers`` for ``local`` is the number of processes (None or 1: this process, no
    pool); for ``ray`` the most units in flight at once (None: as many as the cluster's
    resources schedule) and, for a Ray instance started here, its number of CPUs.
    """

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    max_retries: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


def _number(value, field: str, *, minimum: float, integer: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise RadiopathInputError(f"must be {kind} >= {minimum:g}, got {value!r}", field=field)
    return int(value) if integer else float(value)


def resolve_executor_config(
    value: str | Mapping | ExecutorConfig | None, where: str = "executor"
) -> ExecutorConfig:
    """Check an ``executor`` setting and return it with every key filled in.

    Parameters
    ----------
    value
        None (``local``), a name (``"local"``, ``"ray"``), a mapping of the keys in
        :data:`DEFAULTS`, or an :class:`ExecutorConfig`.
    where
        The dotted key errors name (``executor``).

    Raises
    ------
    RadiopathInputError
        An unknown key or name, or a value of the wrong kind, naming ``where.<key>``.
    """
    if isinstance(value, ExecutorConfig):
        return value
    if value is None:
        value = {}
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise RadiopathInputError(
            f"must be a name ({', '.join(EXECUTORS)}) or a mapping, got {value!r}", field=where
        )
    check_known_keys(value, DEFAULTS, where)
    cfg = {**DEFAULTS, **{k: v for k, v in value.items() if v is not None}}
    if cfg["name"] not in EXECUTORS:
        raise RadiopathInputError(
            f"unknown executor {cfg['name']!r}; choose from {list(EXECUTORS)}",
            field=f"{where}.name",
        )
    if cfg["address"] is not None and cfg["name"] != "ray":
        raise RadiopathInputError(
            "an address is only for the ray executor (--executor ray)", field=f"{where}.address"
        )
    if cfg["address"] is not None and not isinstance(cfg["address"], str):
        raise RadiopathInputError(
            f"must be 'auto', HOST:PORT or ray://HOST:PORT, got {cfg['address']!r}",
            field=f"{where}.address",
        )
    workers = cfg["workers"]
    if workers is not None:
        workers = _number(workers, f"{where}.workers", minimum=1, integer=True)
    return ExecutorConfig(
        name=cfg["name"],
        address=cfg["address"],
        workers=workers,
        cpus_per_task=_number(cfg["cpus_per_task"], f"{where}.cpus_per_task", minimum=0),
        gpus_per_task=_number(cfg["gpus_per_task"], f"{where}.gpus_per_task", minimum=0),
        max_retries=_number(cfg["max_retries"], f"{where}.max_retries", minimum=0, integer=True),
    )
