"""The extraction stage's settings: :class:`ExtractConfig`, a frozen tree of typed keys.

Each key is declared once, with its default, its rule and its doc; a wrong key or value is
refused by its name (and the file the settings were read from) before any image is opened
or anything is written. ``radiopath extract`` builds the settings as defaults <- ``--config``
file <- flags, :func:`radiopath.extract.extract_cohort` as defaults <- ``config`` <- keyword
settings (:func:`resolve_extract_config`); ``docs/config-extract.md`` lists every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from radiopath.config import KeysOf
from radiopath.config_rules import (
    FILE_PATH,
    MAPPING,
    Either,
    Flag,
    ListOf,
    Number,
    OneOf,
    Text,
)
from radiopath.executors import resolve_executor_config
from radiopath.typed_config import TypedConfig, generated_page, setting

IMAGE_MODALITIES = ("wsi", "ct")
CT_NORMALISATIONS = ("auto", "none", "med3d")

_POSITIVE = Number(low=0, low_open=True)
_COUNT = Number(low=1, integer=True)
_SHARE = Number(low=0, high=1)
_CHECKPOINT = Either((FILE_PATH, OneOf((None,))))
_PER_MODALITY = KeysOf(IMAGE_MODALITIES, scalar=True)


def _checked_executor(value):
    """The ``executor`` setting as given (a name or a mapping), once
    :func:`~radiopath.executors.resolve_executor_config` has accepted it."""
    resolve_executor_config(value)
    return value


@dataclass(frozen=True)
class ExtractConfig(TypedConfig):
    """Image files to patch embeddings: the encoders, the slide tiles and the CT cubes."""

    encoder: object = setting(
        "handcrafted",
        Either((Text(), MAPPING)),
        "Encoder registry name (handcrafted, resnet18, uni, conch, chief, segvol), or one per "
        "imaging modality: {wsi: NAME, ct: NAME}.",
    )
    checkpoint: object = setting(
        None,
        Either((_CHECKPOINT, MAPPING)),
        "Local weights file for the encoders that need one (nothing is downloaded), or one per "
        "imaging modality: {wsi: PATH, ct: PATH}.",
    )
    workers: int = setting(
        0, Number(low=0, integer=True), "Tile-reading worker processes (0: read in this process)."
    )
    strict: bool = setting(
        False, Flag(), "Stop at the first missing or unreadable image instead of skipping it."
    )
    device: str = setting("auto", Text(), "Where the encoders run: auto, cpu, cuda, cuda:1, ...")
    batch_size: int = setting(64, _COUNT, "Patches per encoder call.")
    mpp: float = setting(0.5, _POSITIVE, "Slide tile resolution, microns per pixel.")
    patch_size: int = setting(224, _COUNT, "Slide tile side in pixels at that resolution.")
    slide_mpp: float | None = setting(
        None,
        Number(low=0, low_open=True, optional=True),
        "Level-0 microns per pixel of the slides that do not record it.",
    )
    min_tissue: float = setting(0.5, _SHARE, "Smallest tissue fraction of a kept slide tile.")
    ct_spacing: tuple = setting(
        [1.0, 1.0, 1.0],
        ListOf(_POSITIVE, 3),
        "CT voxel size the scans are resampled to, mm (x, y, z).",
    )
    ct_patch_size: int = setting(16, _COUNT, "CT cube side in voxels.")
    ct_margin_mm: float = setting(5.0, Number(low=0), "Margin around the tumour mask, mm.")
    ct_min_fraction: float = setting(
        0.25, _SHARE, "Smallest fraction of a kept CT cube inside the (mask and margin) region."
    )
    ct_normalisation: str = setting(
        "auto",
        OneOf(CT_NORMALISATIONS),
        "CT intensities: the encoder's own (auto), Hounsfield units (none) or MeD-3D's.",
    )
    random_init: bool = setting(
        False,
        Flag(),
        "Allow random weights for the encoders that need a checkpoint (timing and tests only).",
    )
    executor: object = setting(
        "local",
        doc="Where the images are extracted, one per unit (radiopath.executors).",
        convert=_checked_executor,
        allowed="local, ray, or a mapping {name, address, workers, cpus_per_task, "
        "gpus_per_task, max_retries}",
    )

    @classmethod
    def known_keys(cls) -> dict:
        """:meth:`TypedConfig.known_keys`, where ``encoder`` and ``checkpoint`` are one value
        or a mapping per imaging modality."""
        return {**super().known_keys(), "encoder": _PER_MODALITY, "checkpoint": _PER_MODALITY}

    @classmethod
    def rules(cls) -> dict:
        """:meth:`TypedConfig.rules`, with those of ``encoder.<modality>`` and
        ``checkpoint.<modality>``."""
        per_modality = {f"encoder.{m}": Text() for m in IMAGE_MODALITIES}
        per_modality.update({f"checkpoint.{m}": _CHECKPOINT for m in IMAGE_MODALITIES})
        return {**super().rules(), **per_modality}


DEFAULTS: dict = ExtractConfig().to_dict()
"""The defaults as a plain dict (read-only use: tests, records)."""


def resolve_extract_config(
    config: Mapping | ExtractConfig | None = None, overrides: Mapping | None = None
) -> ExtractConfig:
    """Defaults <- ``config`` (a mapping of keys, or a built :class:`ExtractConfig`) <-
    ``overrides`` (keyword settings; a None value leaves the key as it is below).

    Raises
    ------
    RadiopathInputError
        The first unknown key (with a did-you-mean) or wrong value, named by its key
        (``encoder.ct``), before any image is opened.
    """
    cfg = config if isinstance(config, ExtractConfig) else ExtractConfig.from_mapping(config)
    return cfg.with_overrides(overrides)


def reference_page() -> str:
    """``docs/config-extract.md``: every key of :class:`ExtractConfig`, generated from its
    declarations (``tests/extract/test_extract_config.py`` keeps the page equal)."""
    return generated_page(
        ExtractConfig,
        "",
        title="Extraction configuration",
        page="docs/config-extract.md",
        intro=(
            "The keys of `radiopath extract --config FILE` (flags override them: "
            "`--batch-size`, `--ct-margin`, ...) and the keyword settings of "
            "`radiopath.extract.extract_cohort`. Every key is optional; a wrong key or "
            "value is refused by its name before any image is opened."
        ),
    )
