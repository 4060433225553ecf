"""Extraction's unit of work -- one slide or CT volume -- runnable on any executor.

:func:`radiopath.extract.extract_cohort` decides which images still need extracting (a file
already written with the same fingerprint is kept) and hands the others to its executor as
:func:`extract_unit`. The unit reads the image from its path, encodes it and writes the
embedding file itself (atomically, :func:`radiopath.io.write_embeddings`); it returns a
small record for the report, never the embeddings.

The encoders are the workers' state: in this process the ones the caller built; in a
worker process (a Ray actor, one per device on a GPU cluster) they are built once by
:func:`build_encoders` from an :class:`EncoderSetup`, so weights load once per worker, not
once per image.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from radiopath.errors import RadiopathInputError
from radiopath.extract.ct import extract_ct
from radiopath.extract.encoders import PatchEncoder, get_encoder, resolve_device
from radiopath.extract.wsi import extract_slide
from radiopath.io import write_embeddings

if TYPE_CHECKING:
    from radiopath.extract.cohort import ImagePatient

#: Image columns of the cohort table, by modality.
IMAGE_COLUMNS: dict[str, str] = {"wsi": "wsi_image", "ct": "ct_image"}


@dataclass
class ExtractJob:
    """One image of the cohort and the embedding file it becomes."""

    patient: ImagePatient
    modality: str
    index: int
    image: Path
    mask: Path | None
    output: Path


@dataclass(frozen=True)
class EncoderSetup:
    """What a worker builds its encoders from (names, weights, device, options)."""

    names: Mapping[str, str]
    checkpoints: Mapping[str, object]
    random_init: bool
    device: str
    encoder_kwargs: Mapping[str, object]


def build_encoders(spec: EncoderSetup) -> dict[str, PatchEncoder]:
    """A worker's encoders, one per modality, on the worker's device (``"auto"``: its GPU
    when it was given one)."""
    device = resolve_device(spec.device)
    return {
        m: get_encoder(
            name,
            m,
            checkpoint=spec.checkpoints.get(m),
            random_init=spec.random_init,
            device=device,
            **spec.encoder_kwargs,
        )
        for m, name in spec.names.items()
    }


def encoders_as_given(encoders: dict[str, PatchEncoder]) -> dict[str, PatchEncoder]:
    """The caller's own encoders, for units run in this process."""
    return encoders


def extract_unit(
    encoders: Mapping[str, PatchEncoder],
    job: ExtractJob,
    params: Mapping,
    job_config: Mapping,
    fingerprint: str,
    options: Mapping,
) -> dict:
    """Extract one image and write its embedding file.

    Returns ``{"status": "ok", "n_patches", "seconds"}``, or ``{"status": "failed",
    "error": RadiopathInputError, "seconds"}`` when the image cannot be read or encoded (the
    caller reports and skips it, or stops when strict). A failed write raises.
    """
    start = time.perf_counter()
    try:
        bag = _extract_one(job, encoders[job.modality], params, **options)
    except Exception as exc:  # one bad image must not stop the cohort
        return {
            "status": "failed",
            "error": _as_input_error(exc, job),
            "seconds": round(time.perf_counter() - start, 3),
        }
    bag.extra_attrs["extract_fingerprint"] = fingerprint
    bag.extra_attrs["extract_config"] = json.dumps(job_config, sort_keys=True, default=str)
    bag.extra_attrs["source_image"] = str(job.image)
    write_embeddings(job.output, bag)
    return {
        "status": "ok",
        "n_patches": bag.num_patches,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _as_input_error(exc: Exception, job: ExtractJob) -> RadiopathInputError:
    pid = job.patient.patient_id
    if isinstance(exc, RadiopathInputError):
        return RadiopathInputError(
            exc.reason, path=exc.path or job.image, patient_id=pid, field=exc.field
        )
    return RadiopathInputError(
        f"extraction failed ({type(exc).__name__}: {exc})",
        path=job.image,
        patient_id=pid,
        field=IMAGE_COLUMNS[job.modality],
    )


def _extract_one(
    job: ExtractJob,
    encoder: PatchEncoder,
    params: Mapping,
    *,
    workers: int,
    batch_size: int,
    progress: bool,
):
    if job.modality == "wsi":
        return extract_slide(
            job.image,
            encoder,
            mpp=params["mpp"],
            patch_size=params["patch_size"],
            slide_mpp_override=params["slide_mpp"],
            min_tissue=params["min_tissue"],
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
    return extract_ct(
        job.image,
        encoder,
        mask=job.mask,
        spacing=params["spacing"],
        patch_size=params["patch_size"],
        margin_mm=params["margin_mm"],
        min_fraction=params["min_fraction"],
        normalisation=params["normalisation"],
        batch_size=batch_size,
        progress=progress,
    )
