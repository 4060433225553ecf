"""Whole-slide images -> tissue mask -> tiles at a target resolution -> patch embeddings.

The stages follow CLAM and TRIDENT: a tissue mask at low resolution (Otsu's threshold on
HSV saturation, then morphology), a grid of non-overlapping tiles over the tissue at a target
microns-per-pixel and tile size, batched tile reading through a torch ``DataLoader``
(workers open their own slide handle), and an encoder from :mod:`radiopath.extract.encoders`.
Coordinates are the tiles' top-left corners in level-0 pixels; the file's ``patch_size`` is
the tile side in level-0 pixels and ``mpp`` the level-0 resolution, as ``INTERFACE.md``
specifies.

Every format OpenSlide reads works, generic pyramidal TIFF included.

    >>> from radiopath.extract import extract_slide, get_encoder
    >>> bag = extract_slide("slide.svs", get_encoder("handcrafted", "wsi"), mpp=0.5, patch_size=224)

References
----------
.. [1] Otsu, N. A threshold selection method from gray-level histograms. IEEE Trans. SMC 9
   (1979).
.. [2] Lu, M. Y. et al. Data-efficient and weakly supervised computational pathology on
   whole-slide images (CLAM). Nat. Biomed. Eng. 5 (2021).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.extract.encoders import PatchEncoder
from radiopath.io import EmbeddingBag

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- slides


def open_slide(path: str | os.PathLike) -> openslide.OpenSlide:
    """Open a slide with OpenSlide; a missing or unreadable file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise RadiopathInputError("slide file does not exist", path=path, field="wsi_image")
    try:
        return openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise RadiopathInputError(
            "not a slide format OpenSlide reads (SVS, NDPI, MRXS, pyramidal TIFF, ...)",
            path=path,
            field="wsi_image",
        ) from exc
    except (openslide.OpenSlideError, OSError) as exc:
        raise RadiopathInputError(
            f"cannot read the slide ({exc})", path=path, field="wsi_image"
        ) from exc


def slide_mpp(
    slide: openslide.OpenSlide, path: str | os.PathLike, override: float | None = None
) -> float:
    """Microns per pixel at level 0 (``openslide.mpp-x``/``-y``, or ``override``)."""
    if override is not None:
        if not override > 0:
            raise RadiopathInputError(
                f"slide mpp must be > 0, got {override}", path=path, field="mpp"
            )
        return float(override)
    values = []
    for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y):
        try:
            values.append(float(slide.properties[key]))
        except (KeyError, ValueError):
            pass
    if not values or not all(v > 0 for v in values):
        raise RadiopathInputError(
            "the slide does not record its resolution (no openslide.mpp-x property); pass "
            "slide_mpp= with the microns per pixel of level 0",
            path=path,
            field="mpp",
        )
    return float(np.mean(values))


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA array on white (OpenSlide marks areas without data transparent)."""
    if rgba[..., 3].min() == 255:  # the common case: a tile inside the scanned area
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def read_region_rgb(
    slide: openslide.OpenSlide, location: tuple[int, int], level: int, size: tuple[int, int]
) -> np.ndarray:
    """``read_region`` as an ``[h, w, 3]`` uint8 RGB array on white."""
    return rgba_to_rgb(np.asarray(slide.read_region(location, level, size)))


def best_level(slide: openslide.OpenSlide, downsample: float) -> int:
    """The coarsest level whose downsample does not exceed ``downsample`` (with float slack)."""
    return int(slide.get_best_level_for_downsample(downsample * (1.0 + 1e-4)))


def read_downsampled(
    slide: openslide.OpenSlide, level: int, size: tuple[int, int], max_pixels: int = 2**25
) -> np.ndarray:
    """A whole pyramid level resized to ``size`` (w, h), read in strips when it is large.

    A slide without a coarse level (a flat TIFF) would otherwise be read whole into memory.
    """
    lw, lh = slide.level_dimensions[level]
    ds = slide.level_downsamples[level]
    out_w, out_h = size
    rows_per_strip = max(1, int(max_pixels // max(lw, 1) * out_h // max(lh, 1)))
    strips = []
    for r0 in range(0, out_h, rows_per_strip):
        r1 = min(out_h, r0 + rows_per_strip)
        y0, y1 = (
            int(round(r0 * lh / out_h)),
            max(int(round(r1 * lh / out_h)), int(round(r0 * lh / out_h)) + 1),
        )
        strip = read_region_rgb(slide, (0, int(round(y0 * ds))), level, (lw, y1 - y0))
        if strip.shape[:2] != (r1 - r0, out_w):
            strip = np.asarray(
                Image.fromarray(strip).resize((out_w, r1 - r0), Image.Resampling.BOX)
            )
        strips.append(strip)
    return np.concatenate(strips, axis=0)


# --------------------------------------------------------------------------- tissue mask


@dataclass
class TissueMask:
    """A binary tissue mask over the slide at low resolution.

    Attributes
    ----------
    mask
        ``[h, w]`` bool, rows = y.
    downsample
        Level-0 pixels per mask pixel along x and y.
    threshold
        The saturation threshold used (Otsu's, or the floor ``min_saturation``).
    """

    mask: np.ndarray
    downsample: tuple[float, float]
    threshold: float

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


def otsu_threshold(
    values: np.ndarray, bins: int = 256, value_range: tuple[float, float] = (0, 1)
) -> float:
    """Otsu's threshold [1]_: the cut maximising the between-class variance.

    .. math:: t^* = \\arg\\max_t\\; \\omega_0(t)\\,\\omega_1(t)\\,(\\mu_0(t) - \\mu_1(t))^2
    """
    hist, edges = np.histogram(values, bins=bins, range=value_range)
    hist = hist.astype(np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m0 / w0
        mu1 = (m0[-1] - m0) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    # Between well-separated modes the maximum is a plateau over the empty bins: cut in its middle.
    best = int(np.argmax(between))
    top = between >= between[best] * (1.0 - 1e-9)
    lo = hi = best
    while lo > 0 and top[lo - 1]:
        lo -= 1
    while hi < len(top) - 1 and top[hi + 1]:
        hi += 1
    return float(0.5 * (edges[1:][lo] + edges[1:][hi]))


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation :math:`(\\max - \\min) / \\max` of an ``[..., 3]`` uint8 image, in [0, 1]."""
    rgb = rgb.astype(np.float32)
    mx, mn = rgb.max(-1), rgb.min(-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    r = max(int(radius), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx**2 + yy**2 <= r * r


def tissue_mask(
    slide: openslide.OpenSlide,
    *,
    mpp: float,
    mask_mpp: float = 8.0,
    max_side: int = 4096,
    min_saturation: float = 0.05,
    smoothing_um: float = 16.0,
    min_area_um2: float = 2.0e4,
    max_hole_um2: float = 1.0e4,
) -> TissueMask:
    """Tissue mask at low resolution: Otsu on saturation, then morphology.

    The slide is read at the level closest to ``mask_mpp`` and resized to it; saturation is
    median-filtered; Otsu's threshold (floored at ``min_saturation``, so a blank slide stays
    empty) separates stained tissue from the unsaturated glass; a closing then an opening
    with a disk of radius ``smoothing_um`` joins fragments and drops specks; components
    smaller than ``min_area_um2`` are removed and holes smaller than ``max_hole_um2``
    filled.

    Parameters
    ----------
    slide
        An open slide.
    mpp
        Its level-0 microns per pixel.
    mask_mpp
        Resolution of the mask (microns per mask pixel); coarsened so the longer side stays
        within ``max_side``.
    """
    w0, h0 = slide.dimensions
    ds = max(mask_mpp / mpp, 1.0, max(w0, h0) / max_side)
    size = (max(1, int(math.ceil(w0 / ds))), max(1, int(math.ceil(h0 / ds))))
    rgb = read_downsampled(slide, best_level(slide, ds), size)
    dsx, dsy = w0 / size[0], h0 / size[1]
    px_um = mpp * 0.5 * (dsx + dsy)
    sat = ndimage.median_filter(saturation(rgb), size=3)
    thr = max(otsu_threshold(sat), min_saturation)
    mask = sat > thr
    radius = max(1, int(round(smoothing_um / px_um)))
    disk = _disk(radius)
    mask = ndimage.binary_closing(np.pad(mask, radius), structure=disk)[
        radius:-radius, radius:-radius
    ]
    mask = ndimage.binary_opening(mask, structure=disk)
    labels, n = ndimage.label(mask)
    if n:
        areas = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1)) * px_um**2
        mask = np.isin(labels, 1 + np.nonzero(areas >= min_area_um2)[0])
    holes, n = ndimage.label(~mask)
    if n:
        border = np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))
        areas = ndimage.sum_labels(~mask, holes, index=np.arange(1, n + 1)) * px_um**2
        small = 1 + np.nonzero(areas < max_hole_um2)[0]
        mask |= np.isin(holes, np.setdiff1d(small, border))
    return TissueMask(mask=mask, downsample=(dsx, dsy), threshold=thr)


# --------------------------------------------------------------------------- tiles


def tile_grid(
    dimensions: tuple[int, int],
    tissue: TissueMask,
    tile_size: int,
    *,
    stride: int | None = None,
    min_tissue: float = 0.5,
) -> np.ndarray:
    """Top-left corners (x, y, level-0 px) of full tiles whose tissue fraction >= ``min_tissue``.

    The fraction of each tile covered by the mask is read from the mask's integral image in
    one vectorised step.
    """
    w0, h0 = dimensions
    stride = stride or tile_size
    xs = np.arange(0, w0 - tile_size + 1, stride)
    ys = np.arange(0, h0 - tile_size + 1, stride)
    if len(xs) == 0 or len(ys) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    x, y = gx.ravel(), gy.ravel()
    m = tissue.mask
    h, w = m.shape
    dsx, dsy = tissue.downsample
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = m.astype(np.int64).cumsum(0).cumsum(1)
    x0 = np.clip(np.floor(x / dsx).astype(int), 0, w - 1)
    y0 = np.clip(np.floor(y / dsy).astype(int), 0, h - 1)
    x1 = np.clip(np.ceil((x + tile_size) / dsx).astype(int), x0 + 1, w)
    y1 = np.clip(np.ceil((y + tile_size) / dsy).astype(int), y0 + 1, h)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    frac = inside / ((x1 - x0) * (y1 - y0))
    keep = frac >= min_tissue
    return np.stack([x[keep], y[keep]], axis=1).astype(np.int64)


class TileDataset(Dataset):
    """Tiles of one slide as ``uint8`` ``[3, patch_size, patch_size]`` tensors.

    Each tile is read from the pyramid level closest to (not coarser than) the target
    resolution and resized to ``patch_size``. The slide is opened lazily in each process,
    so the dataset can be used with ``DataLoader(num_workers > 0)``.

    Parameters
    ----------
    path
        The slide.
    coords
        ``[N, 2]`` top-left corners in level-0 pixels.
    tile_size
        Tile side in level-0 pixels.
    patch_size
        Side of the returned patches (pixels at the target resolution).
    """

    def __init__(
        self, path: str | os.PathLike, coords: np.ndarray, tile_size: int, patch_size: int
    ):
        self.path = str(path)
        self.coords = np.asarray(coords, dtype=np.int64)
        self.tile_size = int(tile_size)
        self.patch_size = int(patch_size)
        slide = open_slide(self.path)
        try:
            self.level = best_level(slide, self.tile_size / self.patch_size)
            ds = slide.level_downsamples[self.level]
        finally:
            slide.close()
        self.read_size = max(1, int(round(self.tile_size / ds)))
        self._slide: openslide.OpenSlide | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.coords)

    def _handle(self) -> openslide.OpenSlide:
        if self._slide is None or self._pid != os.getpid():
            self._slide, self._pid = open_slide(self.path), os.getpid()
        return self._slide

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_slide"], state["_pid"] = None, None
        return state

    def __getitem__(self, index: int) -> torch.Tensor:
        x, y = (int(v) for v in self.coords[index])
        try:
            rgb = read_region_rgb(self._handle(), (x, y), self.level, (self.read_size,) * 2)
        except openslide.OpenSlideError as exc:
            raise RadiopathInputError(
                f"cannot read the tile at ({x}, {y}) ({exc})", path=self.path, field="wsi_image"
            ) from exc
        if self.read_size != self.patch_size:
            rgb = np.asarray(
                Image.fromarray(rgb).resize((self.patch_size,) * 2, Image.Resampling.BILINEAR)
            )
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def encode_batches(
    loader,
    encoder: PatchEncoder,
    *,
    progress: bool = False,
    desc: str = "",
    total: int | None = None,
) -> np.ndarray:
    """Run ``encoder`` over every batch of ``loader``; returns ``[N, D]`` float32."""
    out = []
    for batch in tqdm(
        loader, desc=desc, disable=not progress, leave=False, unit="batch", total=total
    ):
        out.append(encoder.encode(batch).cpu().numpy())
    if not out:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def extract_slide(
    path: str | os.PathLike,
    encoder: PatchEncoder,
    *,
    mpp: float = 0.5,
    patch_size: int = 224,
    slide_mpp_override: float | None = None,
    min_tissue: float = 0.5,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = False,
    mask_options: dict | None = None,
) -> EmbeddingBag:
    """Tile one slide over its tissue and embed the tiles.

    Parameters
    ----------
    path
        Any slide OpenSlide reads.
    encoder
        A WSI :class:`~radiopath.extract.encoders.PatchEncoder`.
    mpp
        Target resolution of the tiles (microns per pixel).
    patch_size
        Tile side in pixels at the target resolution; the level-0 side is
        ``round(patch_size * mpp / slide_mpp)``.
    slide_mpp_override
        Level-0 resolution to use when the slide does not record it.
    min_tissue
        Smallest tissue fraction of a kept tile.
    batch_size, workers
        ``DataLoader`` batch size and worker processes (0 reads in this process).
    mask_options
        Keyword arguments of :func:`tissue_mask`.

    Returns
    -------
    EmbeddingBag
        ``coords`` ``[N, 2]`` level-0 top-left corners, ``patch_size`` in level-0 pixels,
        ``mpp`` of level 0; ``extra_attrs`` hold the target ``mpp``/``patch_size`` and the
        tissue fraction.
    """
    if encoder.modality != "wsi":
        raise RadiopathInputError(
            f"encoder {encoder.name!r} is for {encoder.modality}, not wsi", field="encoder"
        )
    if not (mpp > 0 and patch_size >= 8):
        raise RadiopathInputError(
            f"need mpp > 0 and patch_size >= 8, got {mpp}, {patch_size}", field="patch_size"
        )
    mpp0, tile0, tissue, coords, dims = _tile_slide(
        path, mpp, patch_size, slide_mpp_override, min_tissue, mask_options
    )
    dataset = TileDataset(path, coords, tile0, patch_size)
    features = _embed_tiles(dataset, encoder, batch_size, workers, progress, Path(path).name)
    log.info(
        "%s: %d tiles of %d level-0 px (%.1f%% tissue)",
        path,
        len(coords),
        tile0,
        100 * tissue.fraction,
    )
    return EmbeddingBag(
        features=features,
        coords=coords,
        modality="wsi",
        patch_size=tile0,
        mpp=mpp0,
        encoder=encoder.name,
        extra_attrs={
            "target_mpp": float(mpp),
            "target_patch_size": int(patch_size),
            "read_level": int(dataset.level),
            "slide_dimensions": np.asarray(dims, dtype=np.int64),
            "tissue_fraction": float(tissue.fraction),
        },
    )


def _tile_slide(path, mpp, patch_size, slide_mpp_override, min_tissue, mask_options):
    """The tissue tiles of a slide: ``(mpp0, tile0, tissue, coords, dims)``.

    ``mpp0`` is the level-0 resolution, ``tile0`` the tile side in level-0 pixels,
    ``tissue`` the :class:`TissueMask`, ``coords`` the tiles' level-0 top-left corners and
    ``dims`` the level-0 size. Raises when the slide cannot be read or has no tissue tile.
    """
    slide = open_slide(path)
    try:
        mpp0 = slide_mpp(slide, path, slide_mpp_override)
        if mpp < mpp0 * 0.999:
            log.warning(
                "%s: target %.3f um/px is finer than the scan (%.3f): tiles are upsampled",
                path,
                mpp,
                mpp0,
            )
        tile0 = max(1, int(round(patch_size * mpp / mpp0)))
        tissue = tissue_mask(slide, mpp=mpp0, **(mask_options or {}))
        coords = tile_grid(slide.dimensions, tissue, tile0, min_tissue=min_tissue)
        dims = slide.dimensions
    except openslide.OpenSlideError as exc:
        raise RadiopathInputError(
            f"cannot read the slide ({exc})", path=path, field="wsi_image"
        ) from exc
    finally:
        slide.close()
    if len(coords) == 0:
        raise RadiopathInputError(
            f"no tissue tile found (tissue covers {100 * tissue.fraction:.1f}% of the mask; "
            f"{tile0}-px tiles with >= {100 * min_tissue:.0f}% tissue)",
            path=path,
            field="wsi_image",
        )
    return mpp0, tile0, tissue, coords, dims


def _embed_tiles(dataset, encoder, batch_size: int, workers: int, progress: bool, name: str):
    """``[N, D]`` embeddings of the tiles of ``dataset``, read in order by a ``DataLoader``."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=int(workers),
        pin_memory=encoder.device.type == "cuda",
    )
    return encode_batches(loader, encoder, progress=progress, desc=name, total=len(loader))
