"""Readers and writers for the data contract of ``INTERFACE.md``.

Two kinds of input:

* **Patch-embedding files**: one HDF5 file per slide or scan with datasets ``features``
  ``[N, D]`` and ``coords`` ``[N, 2]`` (WSI) or ``[N, 3]`` (CT), and attributes
  ``modality``, ``patch_size``, ``mpp`` (WSI) or ``spacing`` (CT) and ``encoder``. This is
  the layout CLAM and TRIDENT write, so their outputs load as they are.
* **The cohort table**: a CSV with one row per patient (``patient_id``, ``time``,
  ``event``, ``wsi``, ``ct`` and any clinical columns). Paths are relative to the CSV.

Loading never writes to input files. Every error names the file, patient and field.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from radiopath.errors import RadiopathInputError
from radiopath.runkit import atomic_path

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("wsi", "ct")
IMAGING_MODALITIES = MODALITIES
COORD_DIMS: dict[str, int] = {"wsi": 2, "ct": 3}
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "time", "event")
# Columns of the cohort table that are not clinical variables.
RESERVED_COLUMNS: frozenset[str] = frozenset(
    {"patient_id", "time", "event", "wsi", "ct", "wsi_image", "ct_image", "ct_mask"}
)


@dataclass
class EmbeddingBag:
    """The patch embeddings of one slide or scan.

    Attributes
    ----------
    features
        ``[N, D]`` float32, one embedding per patch.
    coords
        ``[N, 2]`` (WSI: x, y of the top-left corner in level-0 pixels) or ``[N, 3]``
        (CT: x, y, z voxel index of the patch corner).
    modality
        ``"wsi"`` or ``"ct"``.
    patch_size
        Patch side in pixels (WSI, level 0) or voxels (CT, per axis).
    mpp
        Microns per pixel at level 0 (WSI).
    spacing
        Millimetres per voxel along x, y, z (CT).
    encoder
        Name of the model that produced ``features``.
    path
        The file it was read from, if any.
    """

    features: np.ndarray
    coords: np.ndarray
    modality: str
    patch_size: int | None = None
    mpp: float | None = None
    spacing: tuple[float, float, float] | None = None
    encoder: str | None = None
    path: Path | None = None
    extra_attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_bag(self)

    @property
    def num_patches(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def physical_coords(self) -> np.ndarray:
        """Patch centres in physical units: microns (WSI) or millimetres (CT).

        Falls back to pixel / voxel units when the resolution is unknown.
        """
        half = 0.5 * (self.patch_size or 0)
        centre = self.coords.astype(np.float64) + half
        if self.modality == "wsi" and self.mpp:
            return centre * float(self.mpp)
        if self.modality == "ct" and self.spacing is not None:
            return centre * np.asarray(self.spacing, dtype=np.float64)
        return centre

    @property
    def units(self) -> str:
        if self.modality == "wsi":
            return "um" if self.mpp else "px"
        return "mm" if self.spacing is not None else "voxel"


def validate_bag(bag: EmbeddingBag) -> None:
    """Check one bag against the contract; raise :class:`RadiopathInputError` if broken."""
    path = bag.path
    if bag.modality not in MODALITIES:
        raise RadiopathInputError(
            f"unknown modality {bag.modality!r}; expected one of {MODALITIES}",
            path=path,
            field="modality",
        )
    feats, coords = bag.features, bag.coords
    if feats.ndim != 2:
        raise RadiopathInputError(
            f"expected a 2-D array [N, D], got shape {feats.shape}", path=path, field="features"
        )
    if coords.ndim != 2:
        raise RadiopathInputError(
            f"expected a 2-D array [N, 2 or 3], got shape {coords.shape}",
            path=path,
            field="coords",
        )
    if feats.shape[0] != coords.shape[0]:
        raise RadiopathInputError(
            f"features has {feats.shape[0]} rows but coords has {coords.shape[0]}; "
            "they must describe the same patches",
            path=path,
            field="coords",
        )
    want = COORD_DIMS[bag.modality]
    if coords.shape[1] != want:
        raise RadiopathInputError(
            f"modality {bag.modality!r} needs {want}-D coordinates, got {coords.shape[1]}-D",
            path=path,
            field="coords",
        )
    if not np.issubdtype(feats.dtype, np.floating):
        raise RadiopathInputError(
            f"features must be floating point, got dtype {feats.dtype}", path=path, field="features"
        )
    bad = ~np.isfinite(feats)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise RadiopathInputError(
            f"{len(rows)} patch embedding(s) contain NaN or inf (first rows: {rows[:5].tolist()})",
            path=path,
            field="features",
        )
    if not np.isfinite(coords.astype(np.float64)).all():
        raise RadiopathInputError("coordinates contain NaN or inf", path=path, field="coords")
    if bag.spacing is not None and len(bag.spacing) != 3:
        raise RadiopathInputError(
            f"spacing must have 3 values (x, y, z), got {len(bag.spacing)}",
            path=path,
            field="spacing",
        )


def _decode(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.shape == ():
        return value.item()
    return value


def read_embeddings(path: str | os.PathLike, modality: str | None = None) -> EmbeddingBag:
    """Read one patch-embedding HDF5 file (CLAM / TRIDENT layout).

    Parameters
    ----------
    path
        The ``.h5`` file.
    modality
        The modality the caller expects (e.g. the cohort column it came from). When the file
        has a ``modality`` attribute the two must agree; when it has none, this is used, and
        failing that the modality is inferred from the width of ``coords`` with a warning.

    Returns
    -------
    EmbeddingBag
    """
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("file does not exist", path=path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise RadiopathInputError(f"not a readable HDF5 file ({exc})", path=path) from exc
    with fh:
        for name in ("features", "coords"):
            if name not in fh:
                raise RadiopathInputError(
                    f"dataset '{name}' is missing (found: {sorted(fh.keys())})",
                    path=path,
                    field=name,
                )
        features = np.asarray(fh["features"][()])
        coords = np.asarray(fh["coords"][()])
        attrs = {k: _decode(v) for k, v in fh.attrs.items()}
        # TRIDENT keeps some attributes on the coords dataset.
        for k, v in fh["coords"].attrs.items():
            attrs.setdefault(k, _decode(v))
    # CLAM stores features as [1, N, D] in some versions.
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    file_modality = attrs.pop("modality", None)
    if file_modality is not None:
        file_modality = str(file_modality).lower()
        if modality is not None and file_modality != modality:
            raise RadiopathInputError(
                f"file says modality {file_modality!r} but it is listed as {modality!r}",
                path=path,
                field="modality",
            )
        modality = file_modality
    elif modality is None:
        if coords.ndim != 2 or coords.shape[1] not in (2, 3):
            raise RadiopathInputError(
                f"cannot infer modality from coords of shape {coords.shape}",
                path=path,
                field="modality",
            )
        modality = "wsi" if coords.shape[1] == 2 else "ct"
        warnings.warn(
            f"{path}: no 'modality' attribute; inferred {modality!r} from {coords.shape[1]}-D coords",
            stacklevel=2,
        )
    spacing = attrs.pop("spacing", None)
    if spacing is not None:
        spacing = tuple(float(s) for s in np.atleast_1d(spacing))
    mpp = attrs.pop("mpp", None)
    patch_size = attrs.pop("patch_size", None)
    if features.dtype != np.float32 and np.issubdtype(features.dtype, np.floating):
        features = features.astype(np.float32)
    return EmbeddingBag(
        features=features,
        coords=coords,
        modality=modality,
        patch_size=None if patch_size is None else int(patch_size),
        mpp=None if mpp is None else float(mpp),
        spacing=spacing,
        encoder=None if attrs.get("encoder") is None else str(attrs.pop("encoder")),
        path=path,
        extra_attrs=attrs,
    )


def write_embeddings(path: str | os.PathLike, bag: EmbeddingBag) -> Path:
    """Write a bag as a patch-embedding HDF5 file, atomically (temporary file + rename)."""
    validate_bag(bag)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as fh:
            fh.create_dataset("features", data=np.asarray(bag.features, dtype=np.float32))
            fh.create_dataset("coords", data=np.asarray(bag.coords))
            fh.attrs["modality"] = bag.modality
            if bag.patch_size is not None:
                fh.attrs["patch_size"] = int(bag.patch_size)
            if bag.mpp is not None:
                fh.attrs["mpp"] = float(bag.mpp)
            if bag.spacing is not None:
                fh.attrs["spacing"] = np.asarray(bag.spacing, dtype=np.float64)
            if bag.encoder is not None:
                fh.attrs["encoder"] = str(bag.encoder)
            for key, value in bag.extra_attrs.items():
                fh.attrs[key] = value
    return path


def embedding_width(path: str | os.PathLike) -> int:
    """The embedding width ``D`` of a file, read from the header only."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as fh:
            return int(fh["features"].shape[-1])
    except (OSError, KeyError) as exc:
        raise RadiopathInputError(f"cannot read 'features' ({exc})", path=path) from exc


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
    ids = table["patient_id"]
    times, events = table["time"], table["event"]

    clinical_columns = [c for c in table.columns if c not in RESERVED_COLUMNS]
    root = path.parent
    problems: list[Problem] = []

    def report(pid, file, fld, msg):
        if strict:
            raise RadiopathInputError(msg, path=file, patient_id=pid, field=fld)
        problem = Problem(pid, None if file is None else str(file), fld, msg)
        log.warning("skipped: %s", problem)
        problems.append(problem)

    widths: dict[str, dict[int, str]] = {m: {} for m in modalities}
    patients: list[Patient] = []
    for i, pid in enumerate(ids):
        row = table.iloc[i]
        files: dict[str, list[Path]] = {}
        for m in modalities:
            if m not in table.columns:
                continue
            kept = []
            for rel in _split_paths(row[m]):
                f = Path(rel) if Path(rel).is_absolute() else root / rel
                if check_files:
                    if not f.exists():
                        report(pid, f, m, "embedding file does not exist")
                        continue
                    try:
                        width = embedding_width(f)
                    except RadiopathInputError as exc:
                        report(pid, f, m, exc.reason)
                        continue
                    seen = widths[m]
                    if seen and width not in seen:
                        other_w, other_f = next(iter(seen.items()))
                        report(
                            pid,
                            f,
                            m,
                            f"embedding width {width} differs from {other_w} in '{other_f}' "
                            f"(files of one modality must share one encoder)",
                        )
                        continue
                    seen.setdefault(width, str(f))
                kept.append(f)
            if kept:
                files[m] = kept
        clinical = {c: row[c] for c in clinical_columns}
        has_clinical = any(not pd.isna(v) for v in clinical.values())
        if not files and not has_clinical:
            report(
                pid, None, "modality", "patient has no usable modality (no file, no clinical data)"
            )
            continue
        patients.append(
            Patient(str(pid), float(times.iloc[i]), int(events.iloc[i]), files, clinical)
        )
    if not patients:
        raise RadiopathInputError("no usable patient left after validation", path=path)
    if not any(p.event == 1 for p in patients):
        raise RadiopathInputError(
            "no usable patient with an event is left after skipping bad files",
            path=path,
            field="event",
        )
    return Cohort(
        path=path, patients=patients, clinical_columns=clinical_columns, problems=problems
    )


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
    frame.to_csv(path, index=False)
    return path


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


# --------------------------------------------------------------- fold embeddings


@dataclass
class FoldEmbeddings:
    """Patient embeddings exported by one cross-validation fold of a trained aggregator.

    The train and test patients' vectors are both computed by that fold's model, so the
    downstream survival models never see a representation learnt on their test patients.

    Attributes
    ----------
    fold
        Outer fold index.
    patient_id, split, time, event
        ``[n]`` arrays; ``split`` is ``"train"`` or ``"test"``.
    embedding
        ``[n, d]`` float array.
    risk
        ``[n]`` risk from the aggregator's own Cox head (higher = earlier event), or None.
    """

    fold: int
    patient_id: np.ndarray
    split: np.ndarray
    time: np.ndarray
    event: np.ndarray
    embedding: np.ndarray
    risk: np.ndarray | None = None

    def part(self, split: str) -> FoldEmbeddings:
        keep = self.split == split
        return FoldEmbeddings(
            self.fold,
            self.patient_id[keep],
            self.split[keep],
            self.time[keep],
            self.event[keep],
            self.embedding[keep],
            None if self.risk is None else self.risk[keep],
        )


def write_fold_embeddings(path: str | os.PathLike, fold: FoldEmbeddings) -> Path:
    """Write one fold's embeddings as ``.npz`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "fold": np.asarray(fold.fold),
        "patient_id": np.asarray(fold.patient_id, dtype=str),
        "split": np.asarray(fold.split, dtype=str),
        "time": np.asarray(fold.time, dtype=np.float64),
        "event": np.asarray(fold.event, dtype=np.int64),
        "embedding": np.asarray(fold.embedding, dtype=np.float32),
    }
    if fold.risk is not None:
        arrays["risk"] = np.asarray(fold.risk, dtype=np.float64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: no ".npz" appended
        np.savez_compressed(f, **arrays)
    return path


def read_fold_embeddings(path: str | os.PathLike) -> FoldEmbeddings:
    """Read a file written by :func:`write_fold_embeddings`."""
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("fold embedding file does not exist", path=path)
    with np.load(path, allow_pickle=False) as z:
        emb = z["embedding"]
        if not np.isfinite(emb).all():
            raise RadiopathInputError("embeddings contain NaN or inf", path=path, field="embedding")
        return FoldEmbeddings(
            fold=int(z["fold"]),
            patient_id=z["patient_id"],
            split=z["split"],
            time=z["time"],
            event=z["event"],
            embedding=emb,
            risk=z["risk"] if "risk" in z.files else None,
        )
