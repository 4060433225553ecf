"""From image files to patch embeddings: slides (OpenSlide) and CT scans (MONAI).

Stages, each usable alone:

* :mod:`radiopath.extract.wsi` -- tissue mask, tiling at a target mpp, batched tile reading;
* :mod:`radiopath.extract.ct` -- the MONAI CT chain (RAS, target spacing, HU clip,
  MeD-3D normalisation), tumour-mask-restricted 3-D patches;
* :mod:`radiopath.extract.encoders` -- the encoder registry (``handcrafted``, ``resnet18``,
  ``uni``, ``conch``, ``chief``, ``segvol``);
* :mod:`radiopath.extract.cohort` -- a whole cohort table of images -> embedding files and a
  new cohort CSV (``radiopath extract``), resumable, reporting and skipping bad files.

    >>> from radiopath.extract import extract_cohort
    >>> new_csv = extract_cohort("images/cohort.csv", "embedded", encoder="handcrafted")
"""

from radiopath.extract.cohort import (
    IMAGE_COLUMNS,
    ImageCohort,
    ImagePatient,
    extract_cohort,
    read_image_cohort,
)
from radiopath.extract.ct import (
    CTVolume,
    ct_transforms,
    extract_ct,
    load_ct,
    patch_grid,
    patch_region,
)
from radiopath.extract.encoders import (
    ENCODERS,
    EncoderSpec,
    PatchEncoder,
    available_encoders,
    get_encoder,
    register_encoder,
)
from radiopath.extract.wsi import TileDataset, TissueMask, extract_slide, tile_grid, tissue_mask

__all__ = [
    "CTVolume",
    "ENCODERS",
    "EncoderSpec",
    "IMAGE_COLUMNS",
    "ImageCohort",
    "ImagePatient",
    "PatchEncoder",
    "TileDataset",
    "TissueMask",
    "available_encoders",
    "ct_transforms",
    "extract_cohort",
    "extract_ct",
    "extract_slide",
    "get_encoder",
    "load_ct",
    "patch_grid",
    "patch_region",
    "read_image_cohort",
    "register_encoder",
    "tile_grid",
    "tissue_mask",
]
