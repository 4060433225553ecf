"""The image mode of the synthetic cohort: real pyramidal TIFF slides and NIfTI CT volumes.

Each patient gets a small whole-slide image (an H&E-like tissue section on glass, written
as a tiled, zlib-compressed pyramidal TIFF with ``subfiletype=1`` levels and its resolution
in centimetres, which OpenSlide opens as ``generic-tiff`` with ``openslide.mpp-x`` set)
and a CT volume (a body with a lung, a lumpy tumour and its mask, NIfTI via nibabel).

As in :mod:`radiopath.datasets`, a latent prognostic factor ``z`` per patient drives the
hazard (exponential proportional hazards, independent exponential censoring: reused from
:func:`radiopath.datasets.simulate_outcomes`) and shows itself only in a few contiguous
*planted regions*, here visible in the pixels: on the slide, a dense, dark, nucleus-rich
region (a colour and texture change); in the CT, a hyper-dense, heterogeneous part of the
tumour. The planted fraction of the tissue (tumour) grows with the quantile of ``z``.
Tissue sub-types (nucleus density and hue) and the tumour's shape vary independently of
the outcome.

Outputs under ``out_dir``: ``images/<id>.wsi.tiff``, ``images/<id>.ct.nii.gz``,
``images/<id>.ct_mask.nii.gz``, ``cohort.csv`` (``patient_id, time, event, wsi_image,
ct_image, ct_mask, age, sex, stage``), ``truth.csv`` (``eta``, factors, planted fractions),
``truth/<id>.wsi_planted.npy`` (the planted mask on a coarse grid, see
``truth/image_truth.json`` for its downsample) and ``truth/<id>.ct_planted.nii.gz`` (on the
CT's grid). :func:`planted_patch_fraction` maps the truth onto extracted patches.

    >>> from radiopath.synthetic_images import make_synthetic_image_cohort, IMAGE_MODE_EXTRACT
    >>> from radiopath.extract import extract_cohort
    >>> images = make_synthetic_image_cohort("synthetic-images", n_patients=12, seed=0)
    >>> embedded = extract_cohort(images, "synthetic-embedded", **IMAGE_MODE_EXTRACT)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.special import ndtr
from tqdm.auto import tqdm

from radiopath.datasets import (
    SyntheticConfig,
    _contiguous_regions,
    _tissue_mask_2d,
    _tumour_mask_3d,
    clinical_columns,
    latent_factors,
    simulate_outcomes,
)
from radiopath.errors import RadiopathInputError
from radiopath.io import EmbeddingBag
from radiopath.runkit import atomic_path

log = logging.getLogger(__name__)

#: Extraction settings that suit the synthetic images (tiles of 32 px at 2 um/px, CT cubes
#: of 4 voxels at the scans' own spacing): pass them to ``extract_cohort``.
IMAGE_MODE_EXTRACT: dict = {
    "mpp": 2.0,
    "patch_size": 32,
    "ct_spacing": (1.5, 1.5, 2.5),
    "ct_patch_size": 4,
    "ct_margin_mm": 3.0,
}

# RGB colours of the H&E-like slide.
_GLASS = np.array([243.0, 241.0, 246.0])
_STROMA = np.array([[232.0, 166.0, 196.0], [224.0, 150.0, 190.0], [236.0, 178.0, 200.0]])
_NUCLEUS = np.array([92.0, 58.0, 138.0])
_PLANTED_BASE = np.array([176.0, 118.0, 186.0])


@dataclass
class ImageCohortConfig:
    """Parameters of the synthetic image cohort (deterministic given ``seed``).

    Attributes
    ----------
    n_patients
        Number of patients.
    slide_size
        Level-0 side of each slide in pixels; ``slide_mpp`` its microns per pixel.
    ct_shape, ct_spacing
        CT volume size (voxels, x y z) and voxel size (mm).
    signal
        Where the prognostic factor shows: ``"wsi"``, ``"ct"``, ``"both"`` (one factor in
        both) or ``"split"`` (one factor per modality, both driving the hazard).
    effect
        Log-hazard ratio per sd of the latent factor.
    extent
        (min, max) planted fraction of the tissue / tumour, reached at the factor's
        lowest / highest quantile.
    mask_rate
        Fraction of patients whose CT comes with a tumour mask.
    censoring, baseline_hazard
        Censoring fraction and exponential baseline hazard.
    clinical
        Add ``age``, ``sex`` (noise) and ``stage`` (a noisy reading of the hazard).
    """

    n_patients: int = 24
    slide_size: int = 1024
    slide_mpp: float = 1.0
    ct_shape: tuple[int, int, int] = (64, 64, 40)
    ct_spacing: tuple[float, float, float] = (1.5, 1.5, 2.5)
    signal: str = "both"
    effect: float = 1.5
    extent: tuple[float, float] = (0.08, 0.45)
    mask_rate: float = 1.0
    censoring: float = 0.3
    baseline_hazard: float = 0.02
    clinical: bool = True
    seed: int = 0

    def validate(self) -> None:
        def bad(field, message):
            raise RadiopathInputError(message, field=field)

        if self.n_patients < 4:
            bad("n_patients", f"need at least 4 patients, got {self.n_patients}")
        if not 256 <= self.slide_size <= 16384 or self.slide_size % 8:
            bad("slide_size", f"need a multiple of 8 in [256, 16384], got {self.slide_size}")
        if not self.slide_mpp > 0:
            bad("slide_mpp", f"must be > 0, got {self.slide_mpp}")
        if len(self.ct_shape) != 3 or min(self.ct_shape) < 16:
            bad("ct_shape", f"need 3 sizes >= 16, got {self.ct_shape}")
        if self.signal not in ("wsi", "ct", "both", "split"):
            bad("signal", f"expected wsi, ct, both or split, got {self.signal!r}")
        lo, hi = self.extent
        if not 0.0 < lo <= hi < 0.9:
            bad("extent", f"need 0 < min <= max < 0.9, got {self.extent}")
        if not 0.0 <= self.mask_rate <= 1.0:
            bad("mask_rate", f"must be in [0, 1], got {self.mask_rate}")


# --------------------------------------------------------------------------- slides


def _planted_fraction(factor: float, extent: tuple[float, float]) -> float:
    lo, hi = extent
    return lo + (hi - lo) * float(ndtr(factor))


def _grid_regions(rng, region: np.ndarray, fraction: float, n_regions: int) -> np.ndarray:
    """Contiguous planted cells covering ``fraction`` of ``region`` (a boolean grid)."""
    cells = np.argwhere(region)
    n = max(1, int(round(fraction * len(cells))))
    picked = _contiguous_regions(rng, cells.astype(float), n, n_regions)
    out = np.zeros_like(region)
    out[tuple(cells[picked].T)] = True
    return out


def synthetic_slide(
    rng: np.random.Generator, size: int, planted_fraction: float | None, grid: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An H&E-like RGB slide with a planted nucleus-dense region.

    Returns
    -------
    rgb
        ``[size, size, 3]`` uint8.
    tissue, planted
        Boolean masks on a grid of ``grid``-pixel cells (``[size // grid] * 2``).
    """
    res = size // grid
    # The section fills the slide more than the embedding cohort's blobs: crop their centre.
    big = int(round(res / 0.7))
    off = (big - res) // 2
    tissue = _tissue_mask_2d(rng, big)[off : off + res, off : off + res]
    # Tissue sub-types: Voronoi cells with their own stroma hue and nucleus density.
    cells = np.argwhere(tissue)
    seeds = cells[rng.choice(len(cells), size=min(3, len(cells)), replace=False)]
    _, kind = cKDTree(seeds).query(np.argwhere(np.ones_like(tissue)))
    kind = kind.reshape(tissue.shape)
    planted = np.zeros_like(tissue)
    if planted_fraction is not None:
        planted = _grid_regions(rng, tissue, planted_fraction, int(rng.integers(1, 3)))
    colour = np.where(tissue[..., None], _STROMA[kind], _GLASS)
    colour = np.where(planted[..., None], _PLANTED_BASE, colour).astype(np.float32)
    density = np.where(planted, 0.30, 0.03 + 0.02 * kind) * tissue
    noise_sd = np.where(tissue, 6.0, 1.5).astype(np.float32)
    up = np.ones((grid, grid, 1), dtype=np.float32)
    base = np.kron(colour, up)
    # Nuclei: random 4x4-pixel seeds at the local density, blurred into round blobs.
    seeds_px = rng.uniform(size=(size // 4, size // 4)) < np.kron(
        density, np.ones((grid // 4,) * 2)
    )
    nuc = np.kron(seeds_px.astype(np.float32), np.ones((4, 4), dtype=np.float32))
    nuc = np.clip(ndimage.gaussian_filter(nuc, sigma=1.0) * 1.6, 0.0, 1.0)[..., None]
    rgb = base + nuc * (_NUCLEUS.astype(np.float32) - base)
    rgb += rng.standard_normal(size=(size, size, 1), dtype=np.float32) * np.kron(
        noise_sd[..., None], up
    )
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), tissue, planted


def write_pyramidal_tiff(
    path: str | os.PathLike, rgb: np.ndarray, mpp: float, *, tile: int = 256, min_side: int = 128
) -> Path:
    """Write an RGB image as a tiled pyramidal TIFF that OpenSlide reads (``generic-tiff``).

    Level 0 plus 2x-downsampled levels (``subfiletype=1``, block means) down to ``min_side``;
    zlib compression; ``resolution`` in pixels per centimetre (``1e4 / mpp``) so OpenSlide
    reports ``openslide.mpp-x``.
    """
    path = Path(path)
    options = {
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": "zlib",
        "resolutionunit": "CENTIMETER",
    }
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp) as tif:
        level, ds = rgb, 1
        while True:
            res = 1e4 / (mpp * ds)
            extra = {} if ds == 1 else {"subfiletype": 1}
            tif.write(level, resolution=(res, res), **options, **extra)
            h, w = level.shape[:2]
            if min(h, w) // 2 < min_side:
                break
            level = level[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, 3)
            level = np.rint(level.mean(axis=(1, 3))).astype(np.uint8)
            ds *= 2
    return path


# --------------------------------------------------------------------------- CT


def synthetic_ct(
    rng: np.random.Generator, shape: tuple[int, int, int], planted_fraction: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CT volume (HU, int16) with a body, a lung, a lumpy tumour and a planted hyper-dense part.

    Returns ``hu``, ``tumour`` and ``planted`` on the ``[X, Y, Z]`` voxel grid.
    """
    X, Y, Z = shape
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (x / 0.92) ** 2 + (y / 0.8) ** 2 <= 1.0
    fat = body & ((x / 0.84) ** 2 + (y / 0.72) ** 2 > 1.0)
    lung = ((x - 0.35) / 0.38) ** 2 + (y / 0.45) ** 2 + (z / 0.95) ** 2 <= 1.0
    texture = ndimage.gaussian_filter(rng.normal(size=shape), sigma=1.0)
    texture /= texture.std() + 1e-9
    hu = np.full(shape, -1000.0)
    hu[body] = 45.0
    hu[fat] = -100.0
    hu[lung] = -840.0
    # Tumour: a lumpy ellipsoid in a box centred off the lung's centre.
    box = (X // 2, Y // 2, max(8, Z // 2))
    res = max(box)
    blob = _tumour_mask_3d(rng, res)
    idx = [np.clip((np.arange(b) * res / b).astype(int), 0, res - 1) for b in box]
    blob = blob[np.ix_(*idx)]
    start = (
        int(rng.integers(X // 8, X - box[0] - X // 8 + 1)),
        int(rng.integers(Y // 8, Y - box[1] - Y // 8 + 1)),
        int(rng.integers(0, Z - box[2] + 1)),
    )
    tumour = np.zeros(shape, dtype=bool)
    tumour[tuple(slice(s, s + b) for s, b in zip(start, box))] = blob
    hu[tumour] = 35.0
    noise = np.where(tumour, 12.0, np.where(lung, 30.0, 10.0))
    hu += noise * texture
    planted = np.zeros(shape, dtype=bool)
    if planted_fraction is not None:
        planted = _grid_regions(rng, tumour, planted_fraction, int(rng.integers(1, 3)))
        hu[planted] = 140.0 + 45.0 * texture[planted]
    return np.clip(np.rint(hu), -1024, 3000).astype(np.int16), tumour, planted


def _ct_affine(shape, spacing) -> np.ndarray:
    """RAS affine with the volume centred on the origin."""
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -0.5 * (np.asarray(shape) - 1) * np.asarray(spacing)
    return aff


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    with atomic_path(path, suffix=".tmp.nii.gz") as tmp:
        nib.save(img, tmp)


# --------------------------------------------------------------------------- cohort


def make_synthetic_image_cohort(
    out_dir: str | os.PathLike,
    config: ImageCohortConfig | None = None,
    *,
    progress: bool = True,
    **overrides,
) -> Path:
    """Write the synthetic image cohort and return its cohort CSV.

    Parameters
    ----------
    out_dir
        Output folder (see the module docstring for its layout).
    config
        An :class:`ImageCohortConfig`; keyword ``overrides`` replace its fields.
    progress
        Show a progress bar.

    Returns
    -------
    Path
        ``out_dir/cohort.csv`` with ``wsi_image``, ``ct_image`` and ``ct_mask`` columns;
        extract it with ``extract_cohort(csv, out, **IMAGE_MODE_EXTRACT)``.
    """
    cfg = config or ImageCohortConfig()
    if overrides:
        cfg = ImageCohortConfig(**{**asdict(cfg), **overrides})
    cfg.validate()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    P = cfg.n_patients
    factors, eta = latent_factors(rng, P, cfg.signal, cfg.effect)
    outcome_cfg = SyntheticConfig(
        n_patients=P, censoring=cfg.censoring, baseline_hazard=cfg.baseline_hazard, seed=cfg.seed
    )
    time, event = simulate_outcomes(rng, eta, outcome_cfg)
    has_mask = rng.uniform(size=P) < cfg.mask_rate
    affine = _ct_affine(cfg.ct_shape, cfg.ct_spacing)
    grid = 8
    rows, truth_rows = [], []
    ids = [f"SYNI{i:04d}" for i in range(P)]
    fw, fc = factors["wsi"], factors["ct"]
    for i in tqdm(range(P), desc="synthetic images", disable=not progress, unit="patient"):
        row, truth = _write_patient(
            rng,
            out,
            cfg,
            ids[i],
            {"patient_id": ids[i], "time": round(float(time[i]), 4), "event": int(event[i])},
            float(eta[i]),
            None if fw is None else float(fw[i]),
            None if fc is None else float(fc[i]),
            bool(has_mask[i]),
            affine,
            grid,
        )
        rows.append(row)
        truth_rows.append(truth)
    columns = ["patient_id", "time", "event", "wsi_image", "ct_image", "ct_mask"]
    columns += ["age", "sex", "stage"] if cfg.clinical else []
    pd.DataFrame(rows, columns=columns).to_csv(out / "cohort.csv", index=False)
    pd.DataFrame(truth_rows).to_csv(out / "truth.csv", index=False)
    meta = {
        "config": asdict(cfg),
        "wsi_truth_downsample": grid,
        "ct_affine": affine.tolist(),
        "extract": {
            k: list(v) if isinstance(v, tuple) else v for k, v in IMAGE_MODE_EXTRACT.items()
        },
    }
    (out / "truth" / "image_truth.json").write_text(json.dumps(meta, indent=2))
    log.info("wrote %d synthetic image patients to %s", P, out)
    return out / "cohort.csv"


def _write_patient(rng, out, cfg, pid, row, eta, wsi_factor, ct_factor, has_mask, affine, grid):
    """Write one patient's slide, CT (and tumour mask) and truth files.

    ``row`` holds the patient's outcome columns; returns it with the image paths (and
    clinical columns), and the patient's truth row. The draws from ``rng`` come in a fixed
    order: slide, CT, clinical columns.
    """
    truth = {"patient_id": pid, "eta": eta}
    frac_w = None if wsi_factor is None else _planted_fraction(wsi_factor, cfg.extent)
    rgb, tissue, planted = synthetic_slide(rng, cfg.slide_size, frac_w, grid=grid)
    write_pyramidal_tiff(out / "images" / f"{pid}.wsi.tiff", rgb, cfg.slide_mpp)
    np.save(out / "truth" / f"{pid}.wsi_planted.npy", planted)
    truth["wsi_factor"] = wsi_factor
    truth["wsi_planted_fraction"] = float(planted.sum() / max(tissue.sum(), 1))
    frac_c = None if ct_factor is None else _planted_fraction(ct_factor, cfg.extent)
    hu, tumour, planted_ct = synthetic_ct(rng, cfg.ct_shape, frac_c)
    _save_nifti(out / "images" / f"{pid}.ct.nii.gz", hu, affine)
    _save_nifti(out / "truth" / f"{pid}.ct_planted.nii.gz", planted_ct.astype(np.uint8), affine)
    truth["ct_factor"] = ct_factor
    truth["ct_planted_fraction"] = float(planted_ct.sum() / max(tumour.sum(), 1))
    row["wsi_image"] = f"images/{pid}.wsi.tiff"
    row["ct_image"] = f"images/{pid}.ct.nii.gz"
    row["ct_mask"] = ""
    if has_mask:
        _save_nifti(out / "images" / f"{pid}.ct_mask.nii.gz", tumour.astype(np.uint8), affine)
        row["ct_mask"] = f"images/{pid}.ct_mask.nii.gz"
    if cfg.clinical:
        row.update(clinical_columns(rng, eta, cfg.effect))
    return row, truth


def planted_patch_fraction(
    cohort_dir: str | os.PathLike, patient_id: str, bag: EmbeddingBag
) -> np.ndarray:
    """Fraction of each extracted patch that lies in the planted region (ground truth).

    WSI: the planted grid mask is read at the tile's level-0 footprint. CT: the planted
    volume goes through the same MONAI chain as the scan (as its "mask", so on the same
    grid as the patch coordinates) at the bag's spacing.

    Parameters
    ----------
    cohort_dir
        The folder written by :func:`make_synthetic_image_cohort`.
    patient_id
        The patient.
    bag
        An embedding bag extracted from that patient's image.

    Returns
    -------
    numpy.ndarray
        ``[N]`` fractions in [0, 1], in the bag's patch order.
    """
    root = Path(cohort_dir)
    if bag.modality == "wsi":
        path = root / "truth" / f"{patient_id}.wsi_planted.npy"
        if not path.exists():
            raise RadiopathInputError(
                "no ground truth for this slide", path=path, patient_id=patient_id, field="wsi"
            )
        planted = np.load(path).astype(np.float64)
        grid = json.loads((root / "truth" / "image_truth.json").read_text())["wsi_truth_downsample"]
        size = int(bag.patch_size)
        integral = np.zeros((planted.shape[0] + 1, planted.shape[1] + 1))
        integral[1:, 1:] = planted.cumsum(0).cumsum(1)
        x, y = bag.coords[:, 0], bag.coords[:, 1]
        h, w = planted.shape
        x0, y0 = np.clip(x // grid, 0, w - 1), np.clip(y // grid, 0, h - 1)
        x1 = np.clip(-(-(x + size) // grid), x0 + 1, w)
        y1 = np.clip(-(-(y + size) // grid), y0 + 1, h)
        inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
        return inside / ((x1 - x0) * (y1 - y0))
    from radiopath.extract.ct import gather_patches, load_ct

    truth = root / "truth" / f"{patient_id}.ct_planted.nii.gz"
    image = root / "images" / f"{patient_id}.ct.nii.gz"
    if not truth.exists():
        raise RadiopathInputError(
            "no ground truth for this scan", path=truth, patient_id=patient_id, field="ct"
        )
    if not np.asarray(nib.load(truth).dataobj).any():
        return np.zeros(bag.num_patches)
    volume = load_ct(image, truth, spacing=bag.spacing or (1.0, 1.0, 1.0))
    cubes = gather_patches(volume.mask.astype(np.float32), bag.coords, int(bag.patch_size), 0.0)
    return cubes.flatten(1).mean(1).numpy()
