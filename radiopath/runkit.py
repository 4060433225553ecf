"""What every stage of a run shares: one way to write a file, one lock per run directory,
and checksums that tell a finished file from a partial one.

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
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
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
