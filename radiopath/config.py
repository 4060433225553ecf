"""Run configuration and provenance.

A run is configured by defaults, then an optional YAML or JSON file, then command-line
flags, each overriding the one before. Every run directory gets ``run.json``: the resolved
configuration, the seed, package versions, the git commit and start/end times, so the run
can be reproduced.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import yaml

from radiopath.errors import RadiopathInputError
from radiopath.runkit import RunLock, write_json

TRACKED_PACKAGES = (
    "radiopath",
    "torch",
    "torch-geometric",
    "pyro-ppl",
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


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Recursively merge ``override`` into a copy of ``base``; ``None`` values are ignored."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
        if self.path.exists():
            try:
                previous = json.loads(self.path.read_text())
                history = previous.get("history", [])
                history.append({k: previous.get(k) for k in ("started", "finished", "status")})
                self.record["history"] = history
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                pass  # a partial run.json from an older version: start a new history
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
