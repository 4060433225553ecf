"""CT volumes -> MONAI preprocessing -> 3-D patches over the tumour (or body) -> embeddings.

The preprocessing is a MONAI transform chain on named keys ``image`` (and ``mask``)::

    LoadImaged -> EnsureVolumed -> EnsureChannelFirstd -> Orientationd("RAS")
      -> Spacingd(target spacing; bilinear / nearest) -> ScaleIntensityRanged(HU clip)
      -> [NormalizeIntensityd(MeD-3D mean -158.58, sd 324.70)]

NIfTI files go through nibabel, DICOM series (a folder, or one ``.dcm`` file) through
pydicom, with the rescale slope/intercept applied so values are Hounsfield units. A single
slice becomes a one-slice volume whose thickness is its ``SliceThickness``. An optional
tumour mask (any file MONAI reads; resampled onto the image grid with nearest neighbour)
restricts the patches to the tumour and a margin around it; without one, patches cover
the body (HU > ``body_threshold``).

Patches are cubes of ``patch_size`` voxels on a grid aligned with the preprocessed volume;
``coords`` are the x, y, z voxel indices of their corners in that volume (RAS axes, target
spacing), and the file records ``spacing`` and the volume's ``affine`` so the patches can
be placed in scanner space.

References
----------
.. [1] Chen, S., Ma, K. & Zheng, Y. Med3D: transfer learning for 3D medical image
   analysis. arXiv:1904.00625 (2019).
.. [2] Cardoso, M. J. et al. MONAI: an open-source framework for deep learning in
   healthcare. arXiv:2211.02701 (2022).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    ResampleToMatch,
    ScaleIntensityRanged,
    Spacingd,
)
from scipy import ndimage
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.extract.encoders import (
    CT_NORMALISATIONS,
    HU_RANGE,
    MED3D_MEAN,
    MED3D_STD,
    PatchEncoder,
)
from radiopath.io import EmbeddingBag

log = logging.getLogger(__name__)


class _DropNvImageCodecNotice(logging.Filter):
    """MONAI logs that its optional GPU DICOM decoder is absent each time a reader is built."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "nvImageCodec is not available" not in record.getMessage()


logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").addFilter(_DropNvImageCodecNotice())

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima", "")


class EnsureVolumed(MapTransform):
    """Make every image a 3-D volume before the channel axis is added.

    A single 2-D slice (one DICOM file) gains a slice axis whose spacing is the slice
    thickness; a 4-D series (time or echoes last) keeps its first volume, with a warning.
    """

    def __init__(self, keys: Sequence[Hashable], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            source = img.meta.get("filename_or_obj", key)
            if img.ndim == 2:
                thickness = _slice_thickness(img.meta)
                affine = img.affine.clone()
                img = img.unsqueeze(-1)
                affine[:3, 2] = affine[:3, 2] / max(float(affine[:3, 2].norm()), 1e-12) * thickness
                img.affine = affine
            elif img.ndim == 4:
                warnings.warn(
                    f"{source}: 4-D image {tuple(img.shape)}; using its first volume", stacklevel=2
                )
                affine = img.affine.clone()
                img = img[..., 0]
                img.affine = affine
            elif img.ndim != 3:
                raise RadiopathInputError(
                    f"expected a 3-D volume (or a 2-D slice), got shape {tuple(img.shape)}",
                    path=source,
                    field="ct_image" if key == "image" else "ct_mask",
                )
            d[key] = img
        return d


def _slice_thickness(meta: Mapping) -> float:
    """Slice thickness (mm) from DICOM metadata, 1.0 when absent."""
    for tag in ("00180088", "00180050"):  # SpacingBetweenSlices, SliceThickness
        value = meta.get(tag)
        if isinstance(value, Mapping):
            value = value.get("Value", [None])[0]
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 1.0


def ct_transforms(
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    normalisation: str = "none",
    with_mask: bool = False,
    reader: str | None = None,
    mask_reader: str | None = None,
) -> Compose:
    """The MONAI preprocessing chain on keys ``image`` (and ``mask``); see the module docstring.

    Parameters
    ----------
    spacing
        Target voxel size (mm) along x, y, z.
    normalisation
        ``"none"``: clipped HU; ``"med3d"``: :math:`(HU + 158.58) / 324.70` (MeD-3D [1]_).
    with_mask
        Also load and resample the ``mask`` key (nearest neighbour, no intensity scaling).
    reader, mask_reader
        MONAI reader names (``"PydicomReader"``, ``"NibabelReader"``); None picks by suffix.
    """
    if normalisation not in CT_NORMALISATIONS:
        raise RadiopathInputError(
            f"unknown CT normalisation {normalisation!r}; expected one of {CT_NORMALISATIONS}",
            field="ct_normalisation",
        )
    keys = ["image", "mask"] if with_mask else ["image"]
    chain = [LoadImaged("image", reader=reader, image_only=True)]
    if with_mask:
        chain.append(LoadImaged("mask", reader=mask_reader, image_only=True))
    chain += [
        EnsureVolumed(keys),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
        Orientationd(keys, axcodes="RAS", labels=RAS_LABELS),
        Spacingd(
            keys, pixdim=tuple(float(s) for s in spacing), mode=["bilinear", "nearest"][: len(keys)]
        ),
        ScaleIntensityRanged(
            "image",
            a_min=HU_RANGE[0],
            a_max=HU_RANGE[1],
            b_min=HU_RANGE[0],
            b_max=HU_RANGE[1],
            clip=True,
        ),
    ]
    if normalisation == "med3d":
        chain.append(NormalizeIntensityd("image", subtrahend=MED3D_MEAN, divisor=MED3D_STD))
    return Compose(chain)


@functools.lru_cache(maxsize=8)
def _cached_transforms(spacing, normalisation, with_mask, reader, mask_reader) -> Compose:
    """One chain per configuration (building MONAI readers is not free)."""
    return ct_transforms(
        spacing,
        normalisation=normalisation,
        with_mask=with_mask,
        reader=reader,
        mask_reader=mask_reader,
    )


@dataclass
class CTVolume:
    """A preprocessed CT volume.

    Attributes
    ----------
    image
        ``[X, Y, Z]`` float32 in RAS voxel order at ``spacing``; HU clipped to [-1024, 1024]
        (``normalisation="none"``) or MeD-3D-normalised.
    spacing
        Millimetres per voxel along x, y, z.
    affine
        ``4 x 4`` voxel -> RAS world (mm).
    normalisation
        How ``image`` is scaled.
    mask
        ``[X, Y, Z]`` bool tumour mask on the same grid, or None.
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    normalisation: str = "none"
    mask: np.ndarray | None = None

    def hu(self) -> np.ndarray:
        """The image in Hounsfield units."""
        if self.normalisation == "med3d":
            return self.image * MED3D_STD + MED3D_MEAN
        return self.image

    def from_hu(self, value: float) -> float:
        """A HU value in the units of :attr:`image`."""
        if self.normalisation == "med3d":
            return (value - MED3D_MEAN) / MED3D_STD
        return value


def _reader_errors(exc: BaseException) -> str:
    """The underlying errors of MONAI's "cannot find a suitable reader" (one per reader tried).

    MONAI folds each reader's traceback into one message; keep their last lines only.
    """
    text = str(exc)
    found = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", text, flags=re.MULTILINE)
    unique = list(dict.fromkeys(f"{name.rsplit('.', 1)[-1]}: {msg.strip()}" for name, msg in found))
    return "; ".join(unique[:3]) if unique else f"{type(exc).__name__}: {text.splitlines()[0]}"


def _reader_for(path: Path) -> str | None:
    if path.is_dir():
        return "PydicomReader"
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".img", ".hdr")):
        return "NibabelReader"
    if path.suffix.lower() in DICOM_SUFFIXES:
        return "PydicomReader"
    return None


def load_ct(
    path: str | os.PathLike,
    mask: str | os.PathLike | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    normalisation: str = "none",
) -> CTVolume:
    """Load and preprocess one CT (NIfTI file, DICOM file or DICOM series folder).

    Parameters
    ----------
    path
        The image.
    mask
        Optional tumour mask (non-zero = tumour), resampled onto the image's grid.
    spacing, normalisation
        See :func:`ct_transforms`.

    Raises
    ------
    RadiopathInputError
        A missing or unreadable file, an empty mask, or a non-volumetric image.
    """
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("CT file does not exist", path=path, field="ct_image")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise RadiopathInputError(f"spacing needs 3 values > 0, got {spacing}", field="spacing")
    if mask is not None and not Path(mask).exists():
        raise RadiopathInputError("tumour mask file does not exist", path=mask, field="ct_mask")
    data = {"image": str(path)} if mask is None else {"image": str(path), "mask": str(mask)}
    try:
        with warnings.catch_warnings():
            # MONAI's optional GPU DICOM decoder announces its absence for every reader built.
            warnings.filterwarnings("ignore", message=".*nvImageCodec")
            chain = _cached_transforms(
                spacing,
                normalisation,
                mask is not None,
                _reader_for(path),
                None if mask is None else _reader_for(Path(mask)),
            )
            out = chain(data)
    except RadiopathInputError:
        raise
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError chains
        cause = exc
        while cause.__cause__ is not None and not isinstance(cause, RadiopathInputError):
            cause = cause.__cause__
        if isinstance(cause, RadiopathInputError):
            raise cause from exc
        bad = path if mask is None or str(mask) not in str(cause) else Path(mask)
        raise RadiopathInputError(
            f"cannot read the image ({_reader_errors(cause)})",
            path=bad,
            field="ct_image" if bad == path else "ct_mask",
        ) from exc
    image = out["image"]
    mask_arr = None
    if mask is not None:
        mask_img = out["mask"]
        if tuple(mask_img.shape) != tuple(image.shape) or not torch.allclose(
            mask_img.affine.double(), image.affine.double(), atol=1e-3
        ):
            mask_img = ResampleToMatch(mode="nearest")(mask_img, img_dst=image)
        mask_arr = np.asarray(mask_img[0].numpy() > 0.5)
        if not mask_arr.any():
            raise RadiopathInputError(
                "the tumour mask is empty on the image's grid", path=mask, field="ct_mask"
            )
    return CTVolume(
        image=np.asarray(image[0].numpy(), dtype=np.float32),
        spacing=spacing,
        affine=np.asarray(image.affine.numpy(), dtype=np.float64),
        normalisation=normalisation,
        mask=mask_arr,
    )


# --------------------------------------------------------------------------- patches


def patch_region(
    volume: CTVolume, *, margin_mm: float = 5.0, body_threshold: float = -500.0
) -> np.ndarray:
    """Voxels patches may cover: the tumour dilated by ``margin_mm``, or the body.

    With a tumour mask the region is :math:`\\{v : d(v, \\text{tumour}) \\le m\\}`, the
    Euclidean distance in millimetres (anisotropic spacing respected), computed on the
    tumour's bounding box padded by the margin. Without one it is the largest connected
    component of HU > ``body_threshold``, holes filled slice by slice (lungs included).
    """
    if volume.mask is not None:
        mask = volume.mask
        pad = np.ceil(margin_mm / np.asarray(volume.spacing)).astype(int) + 1
        idx = np.argwhere(mask)
        lo = np.maximum(idx.min(0) - pad, 0)
        hi = np.minimum(idx.max(0) + pad + 1, mask.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        dist = ndimage.distance_transform_edt(~mask[box], sampling=volume.spacing)
        region = np.zeros_like(mask)
        region[box] = dist <= margin_mm
        return region
    body = volume.image > volume.from_hu(body_threshold)
    labels, n = ndimage.label(body)
    if n == 0:
        return body
    sizes = ndimage.sum_labels(body, labels, index=np.arange(1, n + 1))
    body = labels == (1 + int(np.argmax(sizes)))
    for z in range(body.shape[2]):
        body[:, :, z] = ndimage.binary_fill_holes(body[:, :, z])
    return body


def patch_grid(region: np.ndarray, patch_size: int, *, min_fraction: float = 0.25) -> np.ndarray:
    """Corners (x, y, z voxel indices) of grid-aligned cubes covering >= ``min_fraction`` of region.

    The grid starts at voxel 0 with step ``patch_size``; the volume is treated as padded
    (outside the region) up to a multiple of ``patch_size``, so no region voxel is lost.
    """
    p = int(patch_size)
    padded = np.pad(region, [(0, (-s) % p) for s in region.shape])
    gx, gy, gz = (s // p for s in padded.shape)
    frac = padded.reshape(gx, p, gy, p, gz, p).mean(axis=(1, 3, 5))
    return (np.argwhere(frac >= min_fraction) * p).astype(np.int64)


def gather_patches(
    image: np.ndarray, coords: np.ndarray, patch_size: int, fill: float
) -> torch.Tensor:
    """``[N, 1, p, p, p]`` cubes at ``coords`` (volume padded with ``fill`` beyond its end)."""
    p = int(patch_size)
    vol = torch.from_numpy(np.asarray(image, dtype=np.float32))
    pad = [(-s) % p for s in vol.shape]
    if any(pad):
        vol = torch.nn.functional.pad(vol, (0, pad[2], 0, pad[1], 0, pad[0]), value=fill)
    gx, gy, gz = (s // p for s in vol.shape)
    blocks = vol.reshape(gx, p, gy, p, gz, p).permute(0, 2, 4, 1, 3, 5)
    cell = torch.from_numpy(np.asarray(coords) // p)
    return blocks[cell[:, 0], cell[:, 1], cell[:, 2]].unsqueeze(1)


def extract_ct(
    path: str | os.PathLike,
    encoder: PatchEncoder,
    *,
    mask: str | os.PathLike | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    patch_size: int = 16,
    margin_mm: float = 5.0,
    min_fraction: float = 0.25,
    normalisation: str = "auto",
    body_threshold: float = -500.0,
    batch_size: int = 64,
    progress: bool = False,
) -> EmbeddingBag:
    """Preprocess one CT, cut 3-D patches over the tumour (+ margin) or body, and embed them.

    Parameters
    ----------
    path
        NIfTI file, DICOM file or DICOM series folder.
    encoder
        A CT :class:`~radiopath.extract.encoders.PatchEncoder`.
    mask
        Optional tumour mask restricting the patches to the tumour and ``margin_mm``.
    spacing
        Target voxel size (mm).
    patch_size
        Cube side in voxels at ``spacing``.
    min_fraction
        Smallest fraction of a patch inside the region for it to be kept.
    normalisation
        ``"auto"`` (the encoder's own, e.g. MeD-3D for ResNet-18, HU for the hand-crafted
        encoder), ``"none"`` or ``"med3d"``.

    Returns
    -------
    EmbeddingBag
        ``coords`` ``[N, 3]`` voxel corners, ``spacing`` in mm; ``extra_attrs`` hold the
        volume's ``affine``, shape, normalisation and whether a tumour mask was used.
    """
    if encoder.modality != "ct":
        raise RadiopathInputError(
            f"encoder {encoder.name!r} is for {encoder.modality}, not ct", field="encoder"
        )
    if int(patch_size) < 2:
        raise RadiopathInputError(
            f"CT patch size must be >= 2 voxels, got {patch_size}", field="patch_size"
        )
    norm = encoder.ct_normalisation if normalisation == "auto" else normalisation
    volume = load_ct(path, mask, spacing=spacing, normalisation=norm)
    region = patch_region(volume, margin_mm=margin_mm, body_threshold=body_threshold)
    coords = patch_grid(region, patch_size, min_fraction=min_fraction)
    if len(coords) == 0:
        what = "tumour (+ margin)" if volume.mask is not None else "body"
        raise RadiopathInputError(
            f"no {patch_size}-voxel patch covers >= {100 * min_fraction:.0f}% of the {what} "
            f"(volume {volume.image.shape} at {volume.spacing} mm)",
            path=path,
            field="ct_image",
        )
    features = _embed_patches(volume, coords, patch_size, encoder, batch_size, progress, path)
    log.info("%s: %d patches of %d voxels at %s mm", path, len(coords), patch_size, volume.spacing)
    return EmbeddingBag(
        features=features,
        coords=coords,
        modality="ct",
        patch_size=int(patch_size),
        spacing=volume.spacing,
        encoder=encoder.name,
        extra_attrs={
            "affine": volume.affine,
            "volume_shape": np.asarray(volume.image.shape, dtype=np.int64),
            "normalisation": norm,
            "tumour_mask": volume.mask is not None,
            "margin_mm": float(margin_mm),
        },
    )


def _embed_patches(volume: CTVolume, coords, patch_size, encoder, batch_size, progress, path):
    """``[N, D]`` float32 embeddings of the patches at ``coords``, ``batch_size`` at a time.

    Patches reaching outside the volume are filled with air (the bottom of ``HU_RANGE``).
    """
    fill = volume.from_hu(HU_RANGE[0])
    feats = []
    starts = range(0, len(coords), batch_size)
    for s in tqdm(starts, desc=Path(path).name, disable=not progress, leave=False, unit="batch"):
        batch = gather_patches(volume.image, coords[s : s + batch_size], patch_size, fill)
        feats.append(encoder.encode(batch).cpu().numpy())
    return np.concatenate(feats).astype(np.float32, copy=False)
