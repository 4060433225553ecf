"""The report's importance gallery: which patients, and their maps as small images.

By default the gallery shows, for each test fold of the first repeat, the patients of
highest, median and lowest risk. A patient's risk in a fold is the mean, over aggregators
and downstream models, of the percentile of its predicted risk among that fold's test
patients (predicted risks of different models are on different scales; their ranks are
not). For every patient and modality, every aggregator's map is drawn on one colour scale
(the range of all of them): a WSI map over the slide thumbnail where the cohort lists the
slide, else on the patch grid; a CT map as three orthogonal slices (axial, coronal,
sagittal) through one centre for all aggregators, the most important region of their
average map.

Maps are raster images at patch resolution (:func:`radiopath.viz.importance.rasterize`)
coloured with numpy and encoded with Pillow, so a gallery of dozens of maps costs well
under a second; the full-size image of each patient and modality (all aggregators side by
side, names and colour bar drawn in) is written to ``figures/importance/`` and linked.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from radiopath.errors import RadiopathInputError
from radiopath.runkit import write_bytes
from radiopath.viz.importance import (
    CMAP,
    cohort_slides,
    most_important_cell,
    rasterize,
    read_importance,
    run_cohort_path,
    slide_thumbnail,
)

log = logging.getLogger(__name__)

BACKGROUND = np.array([242, 242, 242], dtype=np.uint8)
FULL_WSI = 480  # long side of a full-size WSI panel, pixels
FULL_CT = 200  # height of a full-size CT slice
EMBED_WIDTH = 220  # width of an aggregator's image in the page
ROLES = ("highest", "median", "lowest")


@dataclass
class GalleryMap:
    """One modality of one patient: an image per aggregator on one colour scale."""

    modality: str
    vmin: float
    vmax: float
    images: dict[str, str | None]
    full: str
    over_slide: bool = False


@dataclass
class GalleryPatient:
    patient_id: str
    fold: int
    role: str
    time: float
    event: int
    percentile: float
    risks: dict[str, float] = field(default_factory=dict)
    maps: list[GalleryMap] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- choice


def risk_percentiles(predictions: pd.DataFrame) -> pd.DataFrame:
    """``predictions`` with ``pct``: the risk's percentile among the same fold's test
    patients of the same aggregator and model (1 = highest risk)."""
    keys = ["aggregator", "modalities", "model", "fold"]
    return predictions.assign(pct=predictions.groupby(keys)["risk"].rank(pct=True))


def choose_patients(
    predictions: pd.DataFrame,
    available: set[str] | None = None,
    folds: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The highest-, median- and lowest-risk test patients of each fold.

    Parameters
    ----------
    predictions
        ``predictions.csv``.
    available
        Patients that have importance maps; others are not chosen (None: all).
    folds
        ``folds.csv``; with repeated cross-validation only the folds of repeat 0 are used.

    Returns
    -------
    pandas.DataFrame
        ``patient_id, fold, role, pct, time, event``, three rows per fold (fewer when a
        fold has fewer than three patients with maps); ``role`` is ``highest``, ``median``
        (the lower median of the fold's ordering) or ``lowest``. A patient is chosen once.
    """
    scored = risk_percentiles(predictions)
    if folds is not None and "repeat" in folds.columns:
        first = set(folds.loc[folds["repeat"] == folds["repeat"].min(), "fold"])
        scored = scored[scored["fold"].isin(first)]
    per_patient = (
        scored.groupby(["fold", "patient_id"], sort=True)
        .agg(pct=("pct", "mean"), time=("time", "first"), event=("event", "first"))
        .reset_index()
    )
    if available is not None:
        per_patient = per_patient[per_patient["patient_id"].isin(available)]
    rows, chosen = [], set()
    for _, part in per_patient.groupby("fold", sort=True):
        order = part.sort_values(["pct", "patient_id"]).reset_index(drop=True)
        last = len(order) - 1
        picks = {}  # the extremes first: a fold of two patients shows them, not a median
        for role, i in (("highest", last), ("lowest", 0), ("median", last // 2)):
            if order.loc[i, "patient_id"] not in chosen:
                chosen.add(order.loc[i, "patient_id"])
                picks[role] = {**order.loc[i].to_dict(), "role": role}
        rows += [picks[r] for r in ROLES if r in picks]
    return pd.DataFrame(rows, columns=["patient_id", "fold", "role", "pct", "time", "event"])


def chosen_patients(predictions: pd.DataFrame, patient_ids: list[str], root: Path) -> pd.DataFrame:
    """The rows of :func:`choose_patients` for patients a user named."""
    scored = risk_percentiles(predictions)
    rows = []
    for pid in patient_ids:
        part = scored[scored["patient_id"] == pid]
        if part.empty:
            raise RadiopathInputError(
                "no test prediction for this patient in the run", path=root, patient_id=pid
            )
        fold = int(part["fold"].iloc[0])
        first = part[part["fold"] == fold]
        rows.append(
            {
                "patient_id": pid,
                "fold": fold,
                "role": "chosen",
                "pct": float(first["pct"].mean()),
                "time": float(first["time"].iloc[0]),
                "event": int(first["event"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- drawing


def colorize(grid: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``[..., 3]`` uint8 colours of ``grid`` on the importance colour map; NaN -> grey."""
    span = vmax - vmin if vmax > vmin else 1.0
    rgba = colormaps[CMAP](np.clip((np.nan_to_num(grid, nan=vmin) - vmin) / span, 0, 1))
    rgb = (rgba[..., :3] * 255).astype(np.uint8)
    rgb[np.isnan(grid)] = BACKGROUND
    return rgb


def _upscale(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Nearest-neighbour enlargement by a whole factor, so each patch stays a crisp cell."""
    k = max(1, long_side // max(rgb.shape[:2]))
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)


def wsi_panel(coords, values, vmin, vmax, thumbnail=None, downsample=None) -> np.ndarray:
    """A WSI map: over the slide thumbnail (60 % map, 40 % tissue) or on the patch grid."""
    grid, origin, size = rasterize(coords, values)
    if thumbnail is None or not downsample:
        return _upscale(colorize(grid, vmin, vmax), FULL_WSI)
    h, w = thumbnail.shape[:2]
    x = (np.arange(w) + 0.5) * downsample
    y = (np.arange(h) + 0.5) * downsample
    col = np.floor((x - origin[0]) / size).astype(int)
    row = np.floor((y - origin[1]) / size).astype(int)
    inside = ((row >= 0) & (row < grid.shape[0]))[:, None] & ((col >= 0) & (col < grid.shape[1]))[
        None, :
    ]
    sampled = np.full((h, w), np.nan)
    rr, cc = np.nonzero(inside)
    sampled[rr, cc] = grid[row[rr], col[cc]]
    overlay = colorize(sampled, vmin, vmax).astype(float)
    out = thumbnail[..., :3].astype(float)
    mapped = ~np.isnan(sampled)
    out[mapped] = 0.4 * out[mapped] + 0.6 * overlay[mapped]
    return out.astype(np.uint8)


def ct_panel(coords, values, vmin, vmax, centre: tuple[int, int, int]) -> np.ndarray:
    """Axial, coronal and sagittal slices through ``centre``, side by side."""
    grid, _, _ = rasterize(coords, values)  # [nx, ny, nz]
    cx, cy, cz = (min(c, s - 1) for c, s in zip(centre, grid.shape))
    planes = [grid[:, :, cz].T, grid[:, cy, :].T, grid[cx, :, :].T]
    slices = [_upscale(colorize(p[::-1], vmin, vmax), FULL_CT) for p in planes]
    height = max(s.shape[0] for s in slices)
    gap = np.full((height, 6, 3), 255, dtype=np.uint8)
    padded = []
    for s in slices:
        pad = np.full((height - s.shape[0], s.shape[1], 3), 255, dtype=np.uint8)
        padded += [np.vstack([s, pad]), gap]
    return np.hstack(padded[:-1])


def common_centre(grids: list[np.ndarray]) -> tuple[int, ...]:
    """The most important region of the aggregators' maps scaled to [0, 1] and averaged."""
    shapes = {g.shape for g in grids}
    if len(shapes) != 1:
        return most_important_cell(grids[0])
    scaled = []
    for g in grids:
        lo, hi = np.nanmin(g), np.nanmax(g)
        scaled.append((g - lo) / (hi - lo) if hi > lo else np.where(np.isnan(g), np.nan, 0.5))
    stack = np.stack(scaled)
    count = np.isfinite(stack).sum(axis=0)
    total = np.nansum(stack, axis=0)
    return most_important_cell(np.where(count > 0, total / np.maximum(count, 1), np.nan))


def encode(rgb: np.ndarray, width: int | None = None, photo: bool = False) -> bytes:
    """PNG (JPEG for images over a photograph) bytes, shrunk to ``width`` if given."""
    image = Image.fromarray(rgb)
    if width is not None and image.width > width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.BOX)
    buffer = io.BytesIO()
    if photo:
        image.save(buffer, format="JPEG", quality=82)
    else:
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    kind = "jpeg" if data[:2] == b"\xff\xd8" else "png"
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def colour_stops(n: int = 9) -> str:
    """The colour map as a CSS ``linear-gradient`` (for the page's colour bars)."""
    cmap = colormaps[CMAP]
    stops = []
    for i in range(n):
        r, g, b, _ = (int(255 * c) for c in cmap(i / (n - 1)))
        stops.append(f"rgb({r},{g},{b}) {100 * i / (n - 1):.0f}%")
    return "linear-gradient(to right, " + ", ".join(stops) + ")"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def full_size(panels: list[tuple[str, np.ndarray]], title: str, vmin: float, vmax: float):
    """The aggregators' panels side by side under their names, a colour bar beneath."""
    font = _font(14)
    gap, head, foot = 12, 44, 46
    width = sum(p.shape[1] for _, p in panels) + gap * (len(panels) + 1)
    height = max(p.shape[0] for _, p in panels) + head + foot
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 4), title, fill="black", font=font)
    x = gap
    for name, panel in panels:
        draw.text((x, 24), name, fill="black", font=font)
        canvas.paste(Image.fromarray(panel), (x, head))
        x += panel.shape[1] + gap
    bar = colorize(np.tile(np.linspace(vmin, vmax, 256), (12, 1)), vmin, vmax)
    top = height - foot + 8
    canvas.paste(Image.fromarray(bar), (gap, top))
    draw.text((gap, top + 14), f"{vmin:.3g}", fill="black", font=font)
    draw.text((gap + 200, top + 14), f"{vmax:.3g}  importance", fill="black", font=font)
    return np.asarray(canvas)


# ----------------------------------------------------------------------------- gallery


class _Slides:
    """Slide thumbnails of the run's cohort, read once per patient (None without a slide)."""

    def __init__(self, run_dir: Path):
        cohort = run_cohort_path(run_dir)
        self.paths = cohort_slides(cohort) if cohort is not None and cohort.exists() else {}

    def thumbnail(self, patient_id: str):
        path = self.paths.get(patient_id)
        if path is None or not path.exists():
            return None, None
        try:
            return slide_thumbnail(path, max_size=FULL_WSI)
        except RadiopathInputError as exc:
            log.warning("%s: no thumbnail under the map (%s)", patient_id, exc)
            return None, None


def _patient_maps(root: Path, entry: GalleryPatient, aggregators: list[str]) -> dict[str, dict]:
    """``{modality: {aggregator: (coords, values)}}`` of one patient's importance CSVs; an
    unreadable file is left out and named in ``entry.problems`` (the page shows it)."""
    found: dict[str, dict] = {}
    for agg in aggregators:
        for path in sorted((root / agg).glob(f"{entry.patient_id}.*.csv")):
            modality = path.name[len(entry.patient_id) + 1 : -len(".csv")]
            try:
                found.setdefault(modality, {})[agg] = read_importance(path)
            except RadiopathInputError as exc:
                log.warning("importance map left out of the gallery: %s", exc)
                entry.problems.append(str(exc))
    return {m: maps for m, maps in found.items() if maps}


def _render_modality(run_dir: Path, patient_id: str, modality: str, maps, aggregators, slides):
    """Every aggregator's map of one patient and modality: the full-size PNG is written to
    ``figures/importance/`` and the page's images are returned with it."""
    lo = min(float(v.min()) for _, v in maps.values())
    hi = max(float(v.max()) for _, v in maps.values())
    thumb, down = (None, None)
    if modality == "wsi":
        thumb, down = slides.thumbnail(patient_id)
    centre = None
    if next(iter(maps.values()))[0].shape[1] == 3:
        centre = common_centre([rasterize(c, v)[0] for c, v in maps.values()])
    panels = []
    for agg in aggregators:
        if agg not in maps:
            continue
        coords, values = maps[agg]
        if coords.shape[1] == 2:
            panels.append((agg, wsi_panel(coords, values, lo, hi, thumb, down)))
        else:
            panels.append((agg, ct_panel(coords, values, lo, hi, centre)))
    photo = thumb is not None
    full = run_dir / "figures" / "importance" / f"{patient_id}.{modality}.png"
    write_bytes(full, encode(full_size(panels, f"{patient_id} {modality}", lo, hi)))
    images = {agg: None for agg in aggregators}
    for agg, panel in panels:
        images[agg] = data_uri(encode(panel, EMBED_WIDTH, photo=photo))
    link = full.relative_to(run_dir).as_posix()
    return GalleryMap(modality, lo, hi, images, link, over_slide=photo)


def build_gallery(
    run_dir: Path,
    predictions: pd.DataFrame,
    aggregators: list[str],
    patients: list[str] | None = None,
) -> list[GalleryPatient]:
    """The gallery of a run: chosen patients with every aggregator's maps.

    Full-size images go to ``run_dir/figures/importance/<patient>.<modality>.png``.
    Returns an empty list when the run has no ``importance/`` folder.
    """
    root = run_dir / "importance"
    if not root.is_dir():
        return []
    aggs = [a for a in aggregators if (root / a).is_dir()]
    available = {p.name.split(".")[0] for a in aggs for p in (root / a).glob("*.csv")}
    folds_path = run_dir / "folds.csv"
    folds = pd.read_csv(folds_path, dtype={"patient_id": str}) if folds_path.exists() else None
    if patients:
        choice = chosen_patients(predictions, patients, root)
    else:
        choice = choose_patients(predictions, available, folds)
    scored = risk_percentiles(predictions)
    slides = _Slides(run_dir)
    out = []
    for r in choice.to_dict("records"):
        pid = r["patient_id"]
        mine = scored[(scored["patient_id"] == pid) & (scored["fold"] == r["fold"])]
        entry = GalleryPatient(
            pid,
            int(r["fold"]),
            r["role"],
            float(r["time"]),
            int(r["event"]),
            float(r["pct"]),
            risks=mine.groupby("aggregator")["pct"].mean().to_dict(),
        )
        for modality, maps in _patient_maps(root, entry, aggs).items():
            entry.maps.append(_render_modality(run_dir, pid, modality, maps, aggs, slides))
        out.append(entry)
    return out
