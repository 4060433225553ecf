"""Readers and writers for the data contract of ``INTERFACE.md``.

Two kinds of input:

* **Patch-embedding files**: one HDF5 file per slide or scan with datasets ``features``
  ``[N, D]`` and ``coords`` ``[N, 2]`` (WSI) or ``[N, 3]`` (CT), and attributes
  ``modality``, ``patch_size``, ``mpp`` (WSI) or ``spacing`` (CT) and ``encoder``. This is
  the layout CLAM and TRIDENT write, so their outputs load as they are.
* **The cohort table**: a CSV with one row per patient (``patient_id``, ``time``,
  ``event``, ``wsi``, ``ct`` and any clinical columns). Paths are relative to the CSV.

Loading never writes to input files. Every error names the file, patient and field.

The patch-embedding files are read and written by :mod:`radiopath.embeddings`, the fold
embeddings of a trained aggregator by :mod:`radiopath.fold_embeddings`; this module reads the
cohort table and re-exports their names.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.embeddings import COORD_DIMS as COORD_DIMS
from radiopath.embeddings import IMAGING_MODALITIES as IMAGING_MODALITIES
from radiopath.embeddings import MODALITIES, EmbeddingBag, embedding_width, read_embeddings
from radiopath.embeddings import _decode as _decode
from radiopath.embeddings import validate_bag as validate_bag
from radiopath.embeddings import write_embeddings as write_embeddings
from radiopath.errors import RadiopathInputError
from radiopath.fold_embeddings import FoldEmbeddings as FoldEmbeddings
from radiopath.fold_embeddings import read_fold_embeddings as read_fold_embeddings
from radiopath.fold_embeddings import write_fold_embeddings as write_fold_embeddings
from radiopath.runkit import write_csv

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "time", "event")
# Columns of the cohort table that are not clinical variables.
RESERVED_COLUMNS: frozenset[str] = frozenset(
    {"patient_id", "time", "event", "wsi", "ct", "wsi_image", "ct_image", "ct_mask"}
)


# --------------------------------------------------------------------------- cohort


@dataclass
class Patient:
    """One row of the cohort table."""

    patient_id: str
    time: float
    event: int
    files: dict[str, list[Path]]
    clinical: dict[str, object] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if self.files.get(m)]


@dataclass
class Problem:
    """A non-fatal problem found while reading a cohort (the item was skipped)."""

    patient_id: str | None
    path: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        return str(
            RadiopathInputError(
                self.message, path=self.path, patient_id=self.patient_id, field=self.field
            )
        )


@dataclass
class Cohort:
    """A validated cohort table.

    Attributes
    ----------
    path
        The CSV it was read from.
    patients
        The usable patients, in table order.
    clinical_columns
        Names of the clinical variables.
    problems
        What was skipped and why (empty when ``strict=True`` succeeded).
    """

    path: Path
    patients: list[Patient]
    clinical_columns: list[str]
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, patient_id: str) -> Patient:
        for p in self.patients:
            if p.patient_id == patient_id:
                return p
        raise KeyError(patient_id)

    @property
    def patient_ids(self) -> list[str]:
        return [p.patient_id for p in self.patients]

    @property
    def times(self) -> np.ndarray:
        return np.array([p.time for p in self.patients], dtype=np.float64)

    @property
    def events(self) -> np.ndarray:
        return np.array([p.event for p in self.patients], dtype=np.int64)

    @property
    def modalities(self) -> list[str]:
        """Imaging modalities present for at least one patient."""
        return [m for m in MODALITIES if any(p.files.get(m) for p in self.patients)]

    def clinical_frame(self) -> pd.DataFrame:
        """Clinical variables as a frame indexed by patient id."""
        rows = {p.patient_id: p.clinical for p in self.patients}
        return pd.DataFrame.from_dict(rows, orient="index", columns=self.clinical_columns)

    def require_modalities(self, modalities: Iterable[str]) -> None:
        """Raise if a requested modality is unknown or absent from the cohort."""
        present = set(self.modalities) | ({"clinical"} if self.clinical_columns else set())
        for m in modalities:
            if m not in (*MODALITIES, "clinical"):
                raise RadiopathInputError(
                    f"unknown modality {m!r}; expected some of {(*MODALITIES, 'clinical')}",
                    path=self.path,
                    field="modalities",
                )
            if m not in present:
                raise RadiopathInputError(
                    f"modality {m!r} was asked for but no patient has it "
                    f"(present: {sorted(present)})",
                    path=self.path,
                    field=m,
                )


def _split_paths(cell: object) -> list[str]:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    return [s.strip() for s in str(cell).split(";") if s.strip()]


def read_survival_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a cohort CSV and check its survival columns (shared by every cohort reader).

    Raises :class:`RadiopathInputError`, naming the file, patient and column, on: a missing
    or unreadable file, a missing ``patient_id``/``time``/``event`` column, an empty or
    duplicated patient id, a time that is not a number > 0, an event outside {0, 1}, and a
    table in which no patient has an event. Returns the table with ``time`` as float and
    ``event`` as int.
    """
    path = Path(path)
    if not path.is_file():
        raise RadiopathInputError("cohort table does not exist", path=path)
    try:
        table = pd.read_csv(path, dtype={"patient_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RadiopathInputError(f"not a readable CSV ({exc})", path=path) from exc
    for col in REQUIRED_COLUMNS:
        if col not in table.columns:
            raise RadiopathInputError(
                f"required column is missing (columns: {list(table.columns)})", path=path, field=col
            )
    ids = table["patient_id"]
    if ids.isna().any():
        row = int(np.nonzero(ids.isna().to_numpy())[0][0])
        raise RadiopathInputError(
            f"empty patient id in row {row + 2}", path=path, field="patient_id"
        )
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise RadiopathInputError(
            f"duplicate patient ids: {dup[:5]}",
            path=path,
            patient_id=str(dup[0]),
            field="patient_id",
        )
    times = pd.to_numeric(table["time"], errors="coerce")
    events = pd.to_numeric(table["event"], errors="coerce")
    for i, pid in enumerate(ids):
        t, e = times.iloc[i], events.iloc[i]
        if not np.isfinite(t) or t <= 0:
            raise RadiopathInputError(
                f"follow-up time must be a number > 0, got {table['time'].iloc[i]!r}",
                path=path,
                patient_id=pid,
                field="time",
            )
        if not np.isfinite(e) or e not in (0, 1):
            raise RadiopathInputError(
                f"event must be 0 (censored) or 1 (event), got {table['event'].iloc[i]!r}",
                path=path,
                patient_id=pid,
                field="event",
            )
    if not (events == 1).any():
        raise RadiopathInputError(
            "no patient has an event (all are censored): survival models cannot be fitted",
            path=path,
            field="event",
        )
    return table.assign(time=times.astype(float), event=events.astype(int))


def read_cohort(
    path: str | os.PathLike,
    *,
    strict: bool = False,
    check_files: bool = True,
    modalities: Sequence[str] = MODALITIES,
) -> Cohort:
    """Read and validate a cohort CSV.

    Table-level errors (a missing column, duplicate patient ids, a non-positive or missing
    time, an event outside {0, 1}, a cohort without events) always raise. File-level
    problems (a missing or unreadable embedding file, a width that differs from the rest of
    its modality, a patient left with no modality) are reported in ``Cohort.problems`` and
    the file or patient is skipped, unless ``strict`` is set, in which case they raise.

    Parameters
    ----------
    path
        The cohort CSV; file paths in it are relative to its folder.
    strict
        Raise on the first file-level problem instead of skipping.
    check_files
        Open every embedding file's header (existence, readability, width). Turn off only
        for tables whose files are not made yet (e.g. before ``radiopath extract``).
    modalities
        The imaging columns to read.
    """
    path = Path(path)
    table = read_survival_table(path)
    if not any(m in table.columns for m in modalities) and not (
        set(table.columns) - RESERVED_COLUMNS
    ):
        raise RadiopathInputError(
            f"no modality column: expected some of {list(modalities)} or clinical columns",
            path=path,
        )
    clinical_columns = [c for c in table.columns if c not in RESERVED_COLUMNS]
    reader = _PatientReader(path.parent, modalities, clinical_columns, strict, check_files)
    patients: list[Patient] = []
    for i, pid in enumerate(table["patient_id"]):
        patient = reader.patient(table.iloc[i], pid, table["time"].iloc[i], table["event"].iloc[i])
        if patient is not None:
            patients.append(patient)
    if not patients:
        raise RadiopathInputError("no usable patient left after validation", path=path)
    if not any(p.event == 1 for p in patients):
        raise RadiopathInputError(
            "no usable patient with an event is left after skipping bad files",
            path=path,
            field="event",
        )
    return Cohort(
        path=path, patients=patients, clinical_columns=clinical_columns, problems=reader.problems
    )


class _PatientReader:
    """The rows of a cohort table as :class:`Patient` records, row by row.

    Unusable files are reported (logged and kept in ``problems``; raised when ``strict``)
    and left out; ``widths`` holds, per modality, the first embedding width met and its
    file, against which the later files are checked.
    """

    def __init__(self, root: Path, modalities, clinical_columns, strict: bool, check_files: bool):
        self.root = root
        self.modalities = modalities
        self.clinical_columns = clinical_columns
        self.strict = strict
        self.check_files = check_files
        self.widths: dict[str, dict[int, str]] = {m: {} for m in modalities}
        self.problems: list[Problem] = []

    def report(self, pid, file, fld, msg) -> None:
        if self.strict:
            raise RadiopathInputError(msg, path=file, patient_id=pid, field=fld)
        problem = Problem(pid, None if file is None else str(file), fld, msg)
        log.warning("skipped: %s", problem)
        self.problems.append(problem)

    def patient(self, row: pd.Series, pid, time, event) -> Patient | None:
        """One row's patient, or None when it has neither a usable file nor clinical data."""
        files: dict[str, list[Path]] = {}
        for m in self.modalities:
            if m not in row.index:
                continue
            kept = []
            for rel in _split_paths(row[m]):
                f = Path(rel) if Path(rel).is_absolute() else self.root / rel
                if not self.check_files or self._usable_file(f, pid, m):
                    kept.append(f)
            if kept:
                files[m] = kept
        clinical = {c: row[c] for c in self.clinical_columns}
        has_clinical = any(not pd.isna(v) for v in clinical.values())
        if not files and not has_clinical:
            self.report(
                pid, None, "modality", "patient has no usable modality (no file, no clinical data)"
            )
            return None
        return Patient(str(pid), float(time), int(event), files, clinical)

    def _usable_file(self, f: Path, pid, modality: str) -> bool:
        """Whether embedding file ``f`` exists, is readable and has its modality's width."""
        if not f.exists():
            self.report(pid, f, modality, "embedding file does not exist")
            return False
        try:
            width = embedding_width(f)
        except RadiopathInputError as exc:
            self.report(pid, f, modality, exc.reason)
            return False
        seen = self.widths[modality]
        if seen and width not in seen:
            other_w, other_f = next(iter(seen.items()))
            self.report(
                pid,
                f,
                modality,
                f"embedding width {width} differs from {other_w} in '{other_f}' "
                f"(files of one modality must share one encoder)",
            )
            return False
        seen.setdefault(width, str(f))
        return True


def write_cohort(
    path: str | os.PathLike,
    patients: Iterable[Patient],
    clinical_columns: Sequence[str] = (),
) -> Path:
    """Write a cohort table; file paths are written relative to the CSV's folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = path.parent.resolve()
    rows = []
    for p in patients:
        row: dict[str, object] = {"patient_id": p.patient_id, "time": p.time, "event": p.event}
        for m in MODALITIES:
            row[m] = ";".join(os.path.relpath(Path(f).resolve(), root) for f in p.files.get(m, []))
        for c in clinical_columns:
            row[c] = p.clinical.get(c)
        rows.append(row)
    frame = pd.DataFrame(
        rows, columns=["patient_id", "time", "event", *MODALITIES, *clinical_columns]
    )
    return write_csv(frame, path)


def load_patient_bags(patient: Patient, modality: str) -> list[EmbeddingBag]:
    """Read all embedding files of one patient and modality."""
    bags = []
    for f in patient.files.get(modality, []):
        try:
            bags.append(read_embeddings(f, modality=modality))
        except RadiopathInputError as exc:
            raise RadiopathInputError(
                exc.reason, path=exc.path, patient_id=patient.patient_id, field=exc.field
            ) from exc
    return bags
