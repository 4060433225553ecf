"""Run configuration and provenance.

A run is configured by defaults, then an optional YAML or JSON file, then command-line
flags, each overriding the one before. Every run directory gets ``run.json``: the resolved
configuration, the seed, package versions, the git commit and start/end times, so the run
can be reproduced.
"""

from __future__ import annotations

import copy
import datetime as _dt
import difflib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import yaml

from radiopath.errors import RadiopathInputError
from radiopath.runkit import RunLock, read_json, write_json

TRACKED_PACKAGES = (
    "radiopath",
    "torch",
    "torch-geometric",
    "networkx",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "scikit-survival",
    "lifelines",
    "monai",
    "openslide-python",
    "h5py",
)


def deep_merge(base: Mapping, override: Mapping, *, skip_none: bool = True) -> dict:
    """Recursively merge ``override`` into a copy of ``base``; ``None`` values are ignored
    (unset flags), or with ``skip_none=False`` set the key to None (a file's ``null``) --
    except over a section (a mapping), which a None leaves as it is."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None and (skip_none or isinstance(out.get(key), Mapping)):
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value, skip_none=skip_none)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class KeysOf:
    """In an allowed-keys tree (:func:`check_known_keys`): a mapping whose keys are drawn from
    ``keys`` -- e.g. the modalities of a per-modality setting such as ``ratio: {wsi: 0.2}``.

    ``value`` is what each entry is checked against (a defaults mapping, another
    :class:`KeysOf`, or None: not checked); ``scalar`` allows one plain value instead of the
    mapping (the same for every key).
    """

    keys: tuple[str, ...]
    value: object = None
    scalar: bool = False


def _dotted(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def check_known_keys(
    user: Mapping,
    allowed: Mapping | KeysOf,
    where: str = "",
    *,
    path: str | os.PathLike | None = None,
) -> None:
    """Refuse the first key of ``user``, at any depth, that ``allowed`` does not know.

    ``allowed`` is a tree of defaults: a mapping's keys are the keys allowed at that level,
    and a value that is itself a mapping (also an empty one) is a section whose keys are
    checked in turn; a :class:`KeysOf` is a mapping with free keys from a fixed set. Leaves
    (any other value) are not looked into: their values are each stage's to check.

    Raises
    ------
    RadiopathInputError
        Naming the dotted key (``where`` + the path, e.g. ``train.sparra.alpah0``) and the
        keys allowed at its level; also when a section is given something else than a mapping.
        ``path``, the file the configuration was read from, is named too.
    """
    if isinstance(allowed, KeysOf):
        names, scalar = tuple(allowed.keys), allowed.scalar
    elif isinstance(allowed, Mapping):
        names, scalar = tuple(allowed), False
    else:
        return
    if user is None or (scalar and not isinstance(user, Mapping)):
        return
    if not isinstance(user, Mapping):
        raise RadiopathInputError(
            f"must be a mapping with keys among {sorted(names)}, got {user!r}",
            path=path,
            field=where or None,
        )
    for key, value in user.items():
        dotted = _dotted(where, key)
        if key not in names:
            close = difflib.get_close_matches(str(key), [str(n) for n in names], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed_here = f"allowed keys: {sorted(names)}" if names else "no key is allowed here"
            raise RadiopathInputError(
                f"unknown configuration key {key!r}{hint}; {allowed_here}",
                path=path,
                field=dotted,
            )
        child = allowed.value if isinstance(allowed, KeysOf) else allowed[key]
        check_known_keys(value, child, dotted, path=path)


@contextmanager
def config_section(where: str, whole: str | None = None) -> Iterator[None]:
    """Name the errors raised inside by their full dotted key: field ``x`` becomes
    ``where.x``. ``whole`` is the name the code inside gives the section itself: field
    ``whole`` becomes ``where`` and ``whole.x`` becomes ``where.x`` (an error without a
    field becomes ``where``).

    For checking one section of a larger configuration with the resolver of its stage, e.g.
    a benchmark's ``train`` section. Errors that already start with ``where``, and errors
    about a file (which name the key inside that file), are left as they are.
    """
    try:
        yield
    except RadiopathInputError as exc:
        field = exc.field
        if exc.path is not None or field == where or (field or "").startswith(where + "."):
            raise
        if field is None or field == whole:
            dotted = where
        elif whole and field.startswith(whole + "."):
            dotted = where + field[len(whole) :]
        else:
            dotted = _dotted(where, field)
        raise RadiopathInputError(exc.reason, patient_id=exc.patient_id, field=dotted) from exc


def sets_key(data: Mapping | None, dotted: str, *, none_unset: bool = False) -> bool:
    """Whether ``data`` sets the dotted key or a section above it (``{"ratio": 0.5}`` sets
    ``ratio.wsi``); with ``none_unset`` a None value counts as not set (as flags do)."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return node is not None or not none_unset
        if part not in node:
            return False
        node = node[part]
    return node is not None or not none_unset


@contextmanager
def naming_file(
    path: str | os.PathLike | None,
    data: Mapping | None,
    where: str = "",
    overrides: Mapping | None = None,
) -> Iterator[None]:
    """Name the file ``path`` in an error raised inside about a key that ``data``, the
    configuration read from it, sets (the error's field is ``where`` + that key) and that
    ``overrides`` (flags, None: unset) does not set again; other errors are left as they are.
    """
    try:
        yield
    except RadiopathInputError as exc:
        key = exc.field or ""
        if where and key.startswith(where + "."):
            key = key[len(where) + 1 :]
        if (
            path is None
            or exc.path is not None
            or not exc.field
            or not sets_key(data, key)
            or sets_key(overrides, key, none_unset=True)
        ):
            raise
        raise RadiopathInputError(
            exc.reason, path=path, patient_id=exc.patient_id, field=exc.field
        ) from exc


def load_config_file(path: str | os.PathLike) -> dict:
    """Read a YAML or JSON configuration file into a dict."""
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("configuration file does not exist", path=path)
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RadiopathInputError(f"cannot parse configuration ({exc})", path=path) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RadiopathInputError("configuration must be a mapping at the top level", path=path)
    return data


def resolve_config(
    defaults: Mapping,
    config_file: str | os.PathLike | None = None,
    overrides: Mapping | None = None,
) -> dict:
    """defaults <- config file <- flags."""
    cfg = dict(defaults)
    if config_file is not None:
        cfg = deep_merge(cfg, load_config_file(config_file))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return cfg


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the radiopath checkout (or ``path``), with ``-dirty`` if modified."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """Writes ``run.json`` in a run directory, at start and again at the end.

    Use as a context manager::

        with RunRecord(out_dir, command="train", config=cfg, seed=cfg["seed"]) as run:
            ...
            run.update(metrics={"c_index": 0.71})

    A run that raises is recorded with ``status: failed`` and the error message. A resumed
    run keeps the earlier start times in ``history``.
    """

    def __init__(
        self, out_dir: str | os.PathLike, *, command: str, config: Mapping, seed: int | None
    ):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "run.json"
        self.record: dict = {
            "command": command,
            "argv": sys.argv,
            "config": copy.deepcopy(dict(config)),
            "seed": seed,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "platform": platform.platform(),
            "started": None,
            "finished": None,
            "status": "running",
        }

    def __enter__(self) -> RunRecord:
        # One writer per run directory: a second run on the same folder is refused here,
        # before run.json is touched (radiopath.runkit.RunLock).
        self._lock = RunLock(self.out_dir, command=self.record["command"])
        self._lock.acquire()
        previous = read_json(self.path)  # a damaged run.json is reported and not trusted
        if isinstance(previous, dict):
            history = previous.get("history", [])
            history.append({k: previous.get(k) for k in ("started", "finished", "status")})
            self.record["history"] = history
        self.record["started"] = _now()
        try:
            self.write()
        except BaseException:
            self._lock.release()
            raise
        return self

    def update(self, **fields) -> None:
        self.record.update(fields)
        self.write()

    def write(self) -> None:
        write_json(self.path, self.record)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.record["finished"] = _now()
        if exc is None:
            self.record["status"] = "finished"
        else:
            self.record["status"] = "failed"
            self.record["error"] = f"{exc_type.__name__}: {exc}"
        try:
            self.write()
        finally:
            self._lock.release()
