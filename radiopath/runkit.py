"""What every stage of a run shares: one way to write a file, one lock per run directory,
checksums that tell a finished file from a partial one, and the ledger of finished units.

* :func:`atomic_path` / :func:`write_text` / :func:`write_bytes`: a file is written under a
  unique temporary name in its destination folder and renamed over the destination
  (``os.replace``, atomic on POSIX and Windows), so a reader or a resumed run sees the old
  file or the new one, never half of one. The temporary file is removed if writing fails.
* :class:`RunLock`: one writer per run directory. The lock is an advisory ``flock`` on
  ``<out>/.radiopath.lock``, held for the life of the process and released by the kernel when
  the process dies however it dies, so a lock left by a killed run is taken over by the
  next one without any stale-lock heuristics; the file records the owner's pid, host,
  command and start time for the message a second writer gets. Re-entrant within a
  process (a benchmark's stages lock the same folder again).
* :func:`file_digest` / :func:`verify_digests`: SHA-256 of a finished file, recorded in the
  stage's ledger (e.g. a fold's ``done.json``), so a file truncated or altered afterwards is
  detected on resume and recomputed instead of trusted.
* :func:`config_fingerprint` / :func:`file_fingerprint`: the one hash of a configuration
  and the one cheap (size and modification time) identity of an input file.
* :class:`Ledger`: the finished units of a stage (configuration fingerprint and output
  checksums), in one JSON file or one file per unit; every stage skips and resumes
  through it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from radiopath.errors import RadiopathInputError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the lock is a no-op
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = ".radiopath.lock"


class WriteError(OSError):
    """Writing an output failed (a full disk, a read-only folder): a fault of the
    environment, never a bad input file, so a stage stops on it instead of skipping the
    file it was writing."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.
    ``suffix`` ends the temporary name, for writers that choose the format by extension
    (``".tmp.nii.gz"``).

    The temporary name is unique (pid and a random suffix) and starts with a dot, so
    concurrent writers never share one and globbing for results never sees it::

        with atomic_path(out / "metrics.csv") as tmp:
            table.to_csv(tmp, index=False)

    On an exception the temporary file is removed and the destination keeps its previous
    content. A failed write (an ``OSError``: a full disk, a read-only folder) is re-raised
    as a :class:`WriteError` (an ``OSError``) naming the destination; any other error
    propagates unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteError(exc.errno, f"could not write {path}: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically. The object is serialised in memory and written as plain
    bytes, so a full disk is an ``OSError`` naming ``path`` (torch's own zip writer reports
    it as an unspecific ``RuntimeError``)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def write_csv(frame, path: str | os.PathLike) -> Path:
    """Write a pandas ``DataFrame`` as CSV (no index) atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_columns_csv(columns: Mapping[str, object], path: str | os.PathLike) -> Path:
    """Write equal-length columns as CSV atomically: byte for byte what
    ``write_csv(pandas.DataFrame(columns), path)`` writes (tested), about twice as fast for
    integer and float64 columns, whose values are written as Python writes them (the
    shortest text that reads back to the same float; NaN empty). Columns of any other kind
    (strings, float32, ...) or names that CSV would quote go through pandas.

    Used for the importance maps: one file per patient and modality, thousands of rows of
    float64 each, whose formatting by pandas was half the time of a fold's export.
    """
    import numpy as np
    import pandas as pd

    arrays = {str(k): np.asarray(v) for k, v in columns.items()}
    plain = all(
        a.ndim == 1 and (a.dtype.kind in "iu" or a.dtype == np.float64) for a in arrays.values()
    )
    lengths = {len(a) for a in arrays.values()}
    # one column: pandas quotes an empty (NaN) row so that it is not a blank line
    simple = len(arrays) > 1 and len(lengths) == 1 and not any(_quoted(k) for k in arrays)
    if not (plain and simple):
        return write_csv(pd.DataFrame(columns), path)
    text = [
        list(map(repr, a.tolist()))
        if a.dtype.kind != "f" or not np.isnan(a).any()
        else ["" if x != x else repr(x) for x in a.tolist()]
        for a in arrays.values()
    ]
    rows = [",".join(arrays), *map(",".join, zip(*text))]
    return write_bytes(path, (os.linesep.join(rows) + os.linesep).encode())


def _quoted(name: str) -> bool:
    return not name or any(c in name for c in ',"\r\n') or name != name.strip()


def write_json(path: str | os.PathLike, obj, **kwargs) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``indent=2`` and ``default=str`` by
    default)."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("default", str)
    return write_text(path, json.dumps(obj, **kwargs))


def read_json(path: str | os.PathLike, default=None):
    """The JSON in ``path``, or ``default`` when the file is missing or not valid JSON
    (a partial file from a crash of an older version is reported, not fatal)."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("%s is not valid JSON (%s); ignored", path, exc)
        return default


_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def safe_filename(name: str) -> str:
    """A file-name stem for ``name`` (a patient ID, a slide stem) that is the same on every
    file system and never shared by two different names.

    A name of letters, digits, ``.``, ``_`` and ``-`` (not starting with a dot) is kept as
    it is. Any other name has each other character replaced by ``_`` and a short hash of
    the original appended (``"a/b"`` -> ``"a_b~3ec69c85a4"``), so ``"a/b"`` and ``"a_b"``
    cannot overwrite each other's files.
    """
    name = str(name)
    if _SAFE_NAME.fullmatch(name):
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', name).lstrip('.')}~{digest}"


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digests(root: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``{path relative to root: sha256}`` of existing files (for a stage's ledger)."""
    root = Path(root)
    out = {}
    for p in paths:
        p = Path(p)
        full = p if p.is_absolute() else root / p
        if full.is_file():
            try:
                key = full.relative_to(root).as_posix()
            except ValueError:  # outside the run folder (e.g. a shared graph folder)
                key = str(full.resolve())
            out[key] = file_digest(full)
    return out


def verify_digests(root: str | os.PathLike, recorded: Mapping[str, str]) -> list[str]:
    """The recorded files that are missing or whose content changed (empty: all intact)."""
    root = Path(root)
    bad = []
    for rel, digest in recorded.items():
        full = root / rel
        if not full.is_file() or file_digest(full) != digest:
            bad.append(rel)
    return bad


# ------------------------------------------------------------------- fingerprints


def config_fingerprint(config, exclude: Iterable[str] = ()) -> str:
    """One short hash of a JSON-serialisable configuration: the same settings give the same
    fingerprint whatever their key order (``sort_keys``; values JSON cannot hold, such as
    paths, count by their ``str``). ``exclude`` leaves top-level keys of a mapping out (e.g.
    the settings that change how a run executes, not what it computes)."""
    if isinstance(config, Mapping):
        dropped = set(exclude)
        config = {k: v for k, v in config.items() if k not in dropped}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(path: str | os.PathLike) -> str:
    """The cheap identity of an input file: ``"<size>-<mtime in ns>"`` (the content is not
    read; :func:`file_digest` does that). Of a folder (a DICOM series): its files' count,
    total size and latest modification time. Rewriting or replacing the file changes it."""
    path = Path(path)
    if path.is_dir():
        stats = [f.stat() for f in sorted(path.rglob("*")) if f.is_file()]
        size = sum(s.st_size for s in stats)
        latest = max((s.st_mtime_ns for s in stats), default=0)
        return f"{len(stats)}:{size}-{latest}"
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def file_identity(path: str | os.PathLike | None) -> dict | None:
    """Where an input file is and :func:`file_fingerprint` of it (None for no file), for a
    configuration that names the files it reads."""
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), "fingerprint": file_fingerprint(path)}


# ------------------------------------------------------------------------- ledger


class Ledger:
    """Which units of a stage finished, with which configuration and what they wrote.

    A unit's record is ``{"config": config_fingerprint(config), "outputs": {file:
    sha256}, **extra}`` (``extra``: what the stage wants back, e.g. ``seconds`` or a fold's
    test C-index). :meth:`finished` is true only while the configuration is the same and
    every recorded output is intact: an output truncated, removed or changed since is
    reported and the unit runs again. Records are written atomically (:func:`write_json`),
    so a process killed at any point leaves the previous record or the new one.

    Two layouts, one class:

    * ``Ledger(path)``: every unit in one JSON file (``{unit: record}``), for units marked
      by one process (a benchmark's stages, under its :class:`RunLock`);
    * ``Ledger.per_unit(folder, pattern)``: one JSON file per unit (``pattern`` with ``{}``
      for the unit, e.g. ``"fold_{}.done.json"``), for units that parallel workers mark
      concurrently: no two processes ever rewrite the same file.

    Output paths are recorded relative to ``root`` (the run folder; by default the
    ledger's folder).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        root: str | os.PathLike | None = None,
        label: str = "unit",
    ) -> None:
        self.path = Path(path)
        self.root = Path(root) if root is not None else self.path.parent
        self.label = label  # how the log names a unit ("stage graphs", "fold 3")
        self.pattern: str | None = None

    @classmethod
    def per_unit(
        cls,
        folder: str | os.PathLike,
        pattern: str = "{}.json",
        root: str | os.PathLike | None = None,
        label: str = "unit",
    ) -> Ledger:
        """A ledger with one record file per unit: ``folder / pattern.format(unit)``."""
        ledger = cls(folder, root=folder if root is None else root, label=label)
        ledger.pattern = pattern  # self.path is the folder of the records
        return ledger

    def record_path(self, unit) -> Path:
        """The file that holds ``unit``'s record."""
        if self.pattern is None:
            return self.path
        return self.path / self.pattern.format(safe_filename(str(unit)))

    def _units(self) -> dict:
        units = read_json(self.path, default={})
        return units if isinstance(units, dict) else {}

    def record(self, unit) -> dict | None:
        """``unit``'s record, None when it has none (or an unreadable one)."""
        if self.pattern is None:
            found = self._units().get(str(unit))
        else:
            found = read_json(self.record_path(unit))
        return found if isinstance(found, dict) else None

    def units(self) -> dict[str, dict]:
        """Every unit's record (in the per-unit layout keyed by the file names' ``{}`` part,
        the unit's :func:`safe_filename`)."""
        if self.pattern is None:
            return {k: v for k, v in self._units().items() if isinstance(v, dict)}
        prefix, suffix = self.pattern.split("{}")
        found = {}
        for f in sorted(self.path.glob(self.pattern.format("*"))):
            record = read_json(f)
            if isinstance(record, dict):
                found[f.name[len(prefix) : len(f.name) - len(suffix)]] = record
        return found

    def outputs(self, unit) -> dict[str, str]:
        """The recorded outputs of a unit (``{}`` when it has no record)."""
        return (self.record(unit) or {}).get("outputs") or {}

    def finished(self, unit, config) -> bool:
        """Whether ``unit`` finished with this ``config`` and its outputs are intact."""
        found = self.record(unit)
        if found is None:
            return False
        if found.get("config") != config_fingerprint(config):
            log.info("%s %s finished with another configuration; it runs again", self.label, unit)
            return False
        bad = verify_digests(self.root, found.get("outputs") or {})
        if bad:
            log.warning(
                "%s %s: %s missing, truncated or changed since it finished; it runs again",
                self.label,
                unit,
                ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
            )
            return False
        return True

    def mark(self, unit, config, outputs: Iterable[str | os.PathLike] = (), **extra) -> dict:
        """Record ``unit`` as finished with ``config``, with the SHA-256 of each existing
        file of ``outputs`` and the ``extra`` fields; returns the record."""
        entry = {
            "config": config_fingerprint(config),
            "outputs": digests(self.root, outputs),
            **extra,
        }
        if self.pattern is None:
            units = self._units()  # read again: the file holds every unit's record
            units[str(unit)] = entry
            write_json(self.path, units)
        else:
            write_json(self.record_path(unit), entry)
        return entry


def run_ledger(run_dir: str | os.PathLike) -> Ledger:
    """The units of one run folder, one record each in ``checkpoints/<unit>.done.json``: a
    training run's folds (``fold_<k>``, marked by parallel workers), its ``evaluation``, a
    ``raw_mean`` run's vectors."""
    run_dir = Path(run_dir)
    return Ledger.per_unit(
        run_dir / "checkpoints", "{}.done.json", root=run_dir, label=str(run_dir)
    )


# ----------------------------------------------------------------------------- run lock

_held: dict[str, list] = {}  # resolved folder -> [open lock file, depth]
_held_guard = threading.Lock()


class RunLockedError(RadiopathInputError):
    """Another process is writing to the run directory."""


class RunLock:
    """One writer per run directory (see the module docstring).

    >>> with RunLock(out_dir, command="benchmark"):   # doctest: +SKIP
    ...     ...

    A second process asking for the same folder gets :class:`RunLockedError` naming the
    owner (pid, host, command, start time). The lock is advisory: it keeps radiopath runs
    apart, not other programs.
    """

    def __init__(self, out_dir: str | os.PathLike, command: str = "") -> None:
        self.out_dir = Path(out_dir)
        self.command = command
        self.path = self.out_dir / LOCK_NAME

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _key(self) -> str:
        return str(self.out_dir.resolve())

    def acquire(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        key = self._key()
        with _held_guard:
            if key in _held:
                _held[key][1] += 1
                return
            f = open(self.path, "a+")
            if fcntl is not None:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.seek(0)
                    owner = f.read().strip()
                    f.close()
                    raise RunLockedError(
                        "another radiopath run is writing to this folder"
                        + (f" ({_describe(owner)})" if owner else "")
                        + "; wait for it to finish, or use another output folder",
                        path=self.out_dir,
                    ) from None
            f.seek(0)
            previous = f.read().strip()
            if previous:
                log.info("taking over the lock of a run that ended (%s)", _describe(previous))
            f.seek(0)
            f.truncate()
            f.write(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "command": self.command or " ".join(sys.argv[:2]),
                        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    }
                )
            )
            f.flush()
            _held[key] = [f, 1]

    def release(self) -> None:
        key = self._key()
        with _held_guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            f = entry[0]
            del _held[key]
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()
                f.flush()
            f.close()  # closing the descriptor releases the flock


def _describe(owner: str) -> str:
    try:
        o = json.loads(owner)
    except json.JSONDecodeError:
        return owner[:200]
    return (
        f"pid {o.get('pid')} on {o.get('host')}, {o.get('command') or 'radiopath'}, "
        f"since {o.get('started')}"
    )
