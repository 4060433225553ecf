"""Patch-embedding files: one HDF5 file per slide or scan (the CLAM / TRIDENT layout).

Datasets ``features`` ``[N, D]`` and ``coords`` ``[N, 2]`` (WSI) or ``[N, 3]`` (CT), and
attributes ``modality``, ``patch_size``, ``mpp`` (WSI) or ``spacing`` (CT) and ``encoder``:
:class:`EmbeddingBag` and its checks, :func:`read_embeddings`, :func:`write_embeddings` and
:func:`embedding_width`. Part of :mod:`radiopath.io`, which re-exports these names.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from radiopath.errors import RadiopathInputError
from radiopath.runkit import atomic_path

__all__ = [
    "COORD_DIMS",
    "IMAGING_MODALITIES",
    "MODALITIES",
    "EmbeddingBag",
    "embedding_width",
    "read_embeddings",
    "validate_bag",
    "write_embeddings",
]

MODALITIES: tuple[str, ...] = ("wsi", "ct")
IMAGING_MODALITIES = MODALITIES
COORD_DIMS: dict[str, int] = {"wsi": 2, "ct": 3}


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
