"""Node-importance maps drawn over the slide or the CT volume.

Training writes one CSV per patient, modality and aggregator
(``importance/<aggregator>/<patient_id>.<modality>.csv``, columns ``x, y[, z], importance``,
one row per input patch). Here each patch becomes one cell of a raster at patch
resolution (``coords // patch_size``), so the map is exactly the per-patch values with no
interpolation; a WSI map is drawn over the slide thumbnail when the slide file is known,
a CT map as three orthogonal slices (axial, coronal, sagittal) through the most important
region of the tumour.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import ndimage

from radiopath.errors import RadiopathInputError

log = logging.getLogger(__name__)

CMAP = "inferno"


def read_importance(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an importance CSV; returns ``coords`` [N, 2 or 3] and ``importance`` [N]."""
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("importance file does not exist", path=path)
    table = pd.read_csv(path)
    axes = [c for c in ("x", "y", "z") if c in table.columns]
    if axes[:2] != ["x", "y"] or "importance" not in table.columns:
        raise RadiopathInputError(
            f"expected columns x, y[, z], importance; got {list(table.columns)}", path=path
        )
    values = table["importance"].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise RadiopathInputError("importance contains NaN or inf", path=path, field="importance")
    return table[axes].to_numpy(), values


def infer_patch_size(coords: np.ndarray) -> int:
    """The grid step of patch coordinates (the smallest positive gap along any axis)."""
    steps = []
    for axis in range(coords.shape[1]):
        gaps = np.diff(np.unique(coords[:, axis]))
        gaps = gaps[gaps > 0]
        if len(gaps):
            steps.append(gaps.min())
    return int(min(steps)) if steps else 1


def rasterize(
    coords: np.ndarray, values: np.ndarray, patch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Place one value per patch on a grid at patch resolution.

    Returns
    -------
    grid
        ``[ny, nx]`` (2-D) or ``[nx, ny, nz]`` (3-D) array, NaN where there is no patch;
        when several patches fall into one cell their mean is taken.
    origin
        Coordinates of the grid's first cell (level-0 pixels or voxels).
    patch_size
        The cell size used.
    """
    coords = np.asarray(coords)
    patch_size = patch_size or infer_patch_size(coords)
    origin = coords.min(axis=0)
    cells = ((coords - origin) // patch_size).astype(np.int64)
    shape = tuple(cells.max(axis=0) + 1)
    total = np.zeros(shape)
    count = np.zeros(shape)
    np.add.at(total, tuple(cells.T), values)
    np.add.at(count, tuple(cells.T), 1)
    with np.errstate(invalid="ignore"):
        grid = total / count
    grid[count == 0] = np.nan
    if coords.shape[1] == 2:
        grid = grid.T  # (x, y) -> image rows are y
    return grid, origin, patch_size


def plot_wsi_importance(
    coords: np.ndarray,
    importance: np.ndarray,
    *,
    patch_size: int | None = None,
    thumbnail: np.ndarray | None = None,
    thumbnail_downsample: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Axes:
    """Patch importance over a WSI thumbnail (or over the patch grid alone).

    Parameters
    ----------
    coords
        ``[N, 2]`` level-0 pixel coordinates of the patches' top-left corners.
    importance
        ``[N]`` one value per patch.
    thumbnail, thumbnail_downsample
        An RGB thumbnail of the slide and its level-0 pixels per thumbnail pixel.
    ax
        Where to draw; by default a new :class:`~matplotlib.figure.Figure` outside pyplot
        (``ax.figure``), so no backend is chosen or needed.
    """
    grid, origin, size = rasterize(coords, importance, patch_size)
    if ax is None:
        ax = Figure(figsize=(6, 6)).add_subplot(1, 1, 1)
    ny, nx = grid.shape
    extent = (origin[0], origin[0] + nx * size, origin[1] + ny * size, origin[1])
    if thumbnail is not None and thumbnail_downsample:
        h, w = thumbnail.shape[:2]
        ax.imshow(thumbnail, extent=(0, w * thumbnail_downsample, h * thumbnail_downsample, 0))
        alpha = 0.6
    else:
        alpha = 1.0
    image = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap=CMAP,
        extent=extent,
        alpha=alpha,
        interpolation="nearest",
        vmin=vmin,
        vmax=vmax,
    )
    if thumbnail is None:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x (level-0 px)")
    ax.set_ylabel("y (level-0 px)")
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="importance")
    if title:
        ax.set_title(title)
    return ax


def most_important_cell(grid: np.ndarray, sigma: float = 1.0) -> tuple[int, ...]:
    """The cell with the highest locally smoothed importance (a region, not a lone patch)."""
    filled = np.nan_to_num(grid, nan=0.0)
    support = ndimage.gaussian_filter((~np.isnan(grid)).astype(float), sigma)
    smooth = ndimage.gaussian_filter(filled, sigma) / np.maximum(support, 1e-9)
    smooth[np.isnan(grid)] = -np.inf
    return tuple(int(i) for i in np.unravel_index(np.argmax(smooth), grid.shape))


def plot_ct_importance(
    coords: np.ndarray,
    importance: np.ndarray,
    *,
    patch_size: int | None = None,
    spacing: tuple[float, float, float] | None = None,
    centre: tuple[int, int, int] | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Figure:
    """Patch importance in three orthogonal CT slices through the most important region.

    The tumour's extent (cells with a patch) is shown in grey beneath the map; slices are
    drawn with the voxel spacing as aspect ratio.
    """
    grid, _, _ = rasterize(coords, importance, patch_size)  # [nx, ny, nz]
    centre = centre or most_important_cell(grid)
    sx, sy, sz = spacing or (1.0, 1.0, 1.0)
    views = [
        ("axial", grid[:, :, centre[2]].T, sy / sx, f"z = {centre[2]}"),
        ("coronal", grid[:, centre[1], :].T, sz / sx, f"y = {centre[1]}"),
        ("sagittal", grid[centre[0], :, :].T, sz / sy, f"x = {centre[0]}"),
    ]
    finite = importance[np.isfinite(importance)]
    vmin = float(finite.min()) if vmin is None else vmin
    vmax = float(finite.max()) if vmax is None else vmax
    fig = Figure(figsize=(12, 4.2))
    axes = fig.subplots(1, 3)
    for ax, (name, plane, aspect, where) in zip(axes, views):
        tissue = np.where(np.isnan(plane), np.nan, 0.5)
        ax.imshow(tissue, cmap="gray", vmin=0, vmax=1, origin="lower", aspect=aspect)
        image = ax.imshow(
            np.ma.masked_invalid(plane),
            cmap=CMAP,
            vmin=vmin,
            vmax=vmax,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
        ax.set_title(f"{name} ({where}, patch grid)")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02, label="importance")
    if title:
        fig.suptitle(title)
    return fig


def slide_thumbnail(slide_path: str | os.PathLike, max_size: int = 1024):
    """An RGB thumbnail of a slide (openslide) and its downsample from level 0."""
    import openslide

    try:
        with openslide.OpenSlide(str(slide_path)) as slide:
            thumb = slide.get_thumbnail((max_size, max_size))
            width = slide.dimensions[0]
    except (openslide.OpenSlideError, OSError) as exc:
        raise RadiopathInputError(
            f"openslide cannot read the slide ({exc})", path=slide_path
        ) from exc
    array = np.asarray(thumb.convert("RGB"))
    return array, width / array.shape[1]


def render_importance(
    csv_path: str | os.PathLike,
    png_path: str | os.PathLike,
    *,
    patch_size: int | None = None,
    slide_path: str | os.PathLike | None = None,
    spacing: tuple[float, float, float] | None = None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """Draw one importance CSV to a PNG (2-D coords: WSI map; 3-D: CT slices)."""
    coords, values = read_importance(csv_path)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if coords.shape[1] == 2:
        thumb, down = (None, None)
        if slide_path is not None and Path(slide_path).exists():
            thumb, down = slide_thumbnail(slide_path)
        fig = Figure(figsize=(6.5, 6))
        ax = fig.add_subplot(1, 1, 1)
        plot_wsi_importance(
            coords,
            values,
            patch_size=patch_size,
            thumbnail=thumb,
            thumbnail_downsample=down,
            ax=ax,
            title=title,
            vmin=vmin,
            vmax=vmax,
        )
    else:
        fig = plot_ct_importance(
            coords,
            values,
            patch_size=patch_size,
            spacing=spacing,
            title=title,
            vmin=vmin,
            vmax=vmax,
        )
    fig.savefig(png_path, dpi=110, bbox_inches="tight")
    return png_path


def planted_importance_auc(importance: np.ndarray, planted: np.ndarray) -> float:
    """ROC AUC of patch importance for telling planted patches from the rest (NaN if one class)."""
    from sklearn.metrics import roc_auc_score

    planted = np.asarray(planted, dtype=bool)
    if planted.all() or not planted.any():
        return float("nan")
    return float(roc_auc_score(planted, importance))


def run_cohort_path(run_dir: Path) -> Path | None:
    """The cohort table a run recorded in its ``run.json`` (None when it recorded none)."""
    import json

    record = run_dir / "run.json"
    if not record.exists():
        return None
    cfg = json.loads(record.read_text()).get("config", {})
    cohort = cfg.get("cohort") or cfg.get("cohort_csv")
    return Path(cohort) if cohort else None


def cohort_slides(cohort_csv: str | os.PathLike) -> dict[str, Path]:
    """Each patient's (first) slide file of a cohort table's ``wsi_image`` column, resolved
    against the table's folder; patients without a slide are left out."""
    cohort_csv = Path(cohort_csv)
    table = pd.read_csv(cohort_csv, dtype={"patient_id": str})
    if "wsi_image" not in table.columns:
        return {}
    slides = {}
    for pid, cell in zip(table["patient_id"], table["wsi_image"]):
        if isinstance(cell, str) and cell.strip():
            slides[pid] = cohort_csv.parent / cell.split(";")[0].strip()
    return slides


def write_importance_maps(
    run_dir: str | os.PathLike,
    patient_id: str,
    *,
    aggregators: list[str] | None = None,
    cohort_csv: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Draw every importance CSV of one patient in a run to PNGs.

    The slide thumbnail is used when the cohort table lists the slide (``wsi_image``);
    patch sizes and CT spacing come from the patient's embedding files. Output goes to
    ``<run>/importance/<aggregator>/<patient_id>.<modality>.png`` unless ``out_dir`` is given.
    All maps of one modality share one colour scale across aggregators.
    """
    from radiopath.io import read_cohort, read_embeddings

    run_dir = Path(run_dir)
    root = run_dir / "importance"
    if not root.is_dir():
        raise RadiopathInputError("no importance/ folder: train the run first", path=run_dir)
    aggs = aggregators or sorted(p.name for p in root.iterdir() if p.is_dir())
    csvs = [(a, f) for a in aggs for f in sorted((root / a).glob(f"{patient_id}.*.csv"))]
    if not csvs:
        known = sorted({f.name.split(".")[0] for a in aggs for f in (root / a).glob("*.csv")})
        raise RadiopathInputError(
            f"no importance for this patient (patients in the run: {known[:10]}...)",
            path=root,
            patient_id=patient_id,
        )
    cohort_csv = Path(cohort_csv) if cohort_csv else run_cohort_path(run_dir)
    patient, slide = None, None
    if cohort_csv is not None and cohort_csv.exists():
        # only this patient's file paths are needed: do not open every file of the cohort
        cohort = read_cohort(cohort_csv, check_files=False)
        if patient_id in cohort.patient_ids:
            patient = cohort[patient_id]
        slide = cohort_slides(cohort_csv).get(patient_id)
    scales: dict[str, tuple[float, float]] = {}
    for _, f in csvs:
        modality = f.name.split(".")[-2]
        _, values = read_importance(f)
        lo, hi = scales.get(modality, (np.inf, -np.inf))
        scales[modality] = (min(lo, values.min()), max(hi, values.max()))
    written = []
    for agg, f in csvs:
        modality = f.name.split(".")[-2]
        patch_size, spacing = None, None
        if patient is not None and patient.files.get(modality):
            bag = read_embeddings(patient.files[modality][0], modality=modality)
            patch_size, spacing = bag.patch_size, bag.spacing
        target = (Path(out_dir) / agg if out_dir else root / agg) / f"{patient_id}.{modality}.png"
        lo, hi = scales[modality]
        written.append(
            render_importance(
                f,
                target,
                patch_size=patch_size,
                slide_path=slide if modality == "wsi" else None,
                spacing=spacing,
                title=f"{patient_id} {modality}: {agg}",
                vmin=lo,
                vmax=hi,
            )
        )
    return written
