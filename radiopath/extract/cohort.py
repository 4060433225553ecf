"""A cohort of image files -> embedding files and a new cohort table (``radiopath extract``).

The input is a cohort CSV as in ``INTERFACE.md`` whose imaging columns name image files
instead of embeddings: ``wsi_image`` (slides), ``ct_image`` (NIfTI files, DICOM files or
DICOM series folders) and ``ct_mask`` (optional tumour masks, one per ``ct_image`` entry),
relative to the CSV, several separated by ``;``. The output folder receives

* ``embeddings/<patient>.<modality>[.<k>].h5`` -- one embedding file per image;
* ``cohort.csv`` -- the input table with ``wsi``/``ct`` pointing at those files (image
  columns kept, all paths relative to the new CSV), ready for ``radiopath graphs``;
* ``extract_report.csv`` -- one row per image: ``ok``, ``resumed`` or ``failed`` and why;
* ``run.json`` -- the resolved configuration and provenance.

The run is resumable: an embedding file already written with the same configuration and
source file (fingerprint stored in the file) is kept. A missing or unreadable image is
logged, listed in the report and skipped while the rest of the cohort completes, unless
``strict=True``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pandas as pd
import torch
from tqdm.auto import tqdm

from radiopath.config import RunRecord
from radiopath.errors import RadiopathInputError
from radiopath.executors import Executor, ExecutorArg, borrowed
from radiopath.extract.config import ExtractConfig, resolve_extract_config
from radiopath.extract.encoders import PatchEncoder, get_encoder, get_encoder_spec, resolve_device
from radiopath.extract.units import (
    IMAGE_COLUMNS,
    EncoderSetup,
    ExtractJob,
    build_encoders,
    encoders_as_given,
    extract_unit,
)
from radiopath.io import MODALITIES, RESERVED_COLUMNS, read_survival_table
from radiopath.runkit import config_fingerprint, file_identity, safe_filename, write_csv

log = logging.getLogger(__name__)

MASK_COLUMN = "ct_mask"
#: Bumped when the embedding-file layout written here changes (invalidates resumed files).
FORMAT_VERSION = 1


# --------------------------------------------------------------------------- the table


@dataclass
class ImagePatient:
    """One row of an image cohort table.

    Attributes
    ----------
    images
        Per modality, the image files (absolute paths).
    masks
        Tumour mask per CT image (same order as ``images["ct"]``), None where absent.
    row
        The row as read, for writing the new table.
    """

    patient_id: str
    time: float
    event: int
    images: dict[str, list[Path]]
    masks: list[Path | None] = field(default_factory=list)
    row: dict = field(default_factory=dict)


@dataclass
class ImageCohort:
    """A validated image cohort table."""

    path: Path
    patients: list[ImagePatient]
    columns: list[str]

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if any(p.images.get(m) for p in self.patients)]


def _split(cell: object) -> list[str]:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return []
    return [s.strip() for s in str(cell).split(";") if s.strip()]


def read_image_cohort(path: str | os.PathLike) -> ImageCohort:
    """Read and validate a cohort CSV whose imaging columns are image files.

    Table-level problems raise (naming the file, patient and column): a missing
    ``patient_id``/``time``/``event`` column, no image column, an empty or duplicated
    patient id, a time that is not > 0, an event outside {0, 1}, no event at all, or a
    ``ct_mask`` cell whose number of entries differs from its ``ct_image`` cell. Whether
    the image files exist is checked during extraction, where a bad file is reported and
    skipped.
    """
    path = Path(path)
    table = read_survival_table(path)
    if not any(c in table.columns for c in IMAGE_COLUMNS.values()):
        raise RadiopathInputError(
            f"no image column: expected some of {list(IMAGE_COLUMNS.values())} "
            f"(columns: {list(table.columns)})",
            path=path,
        )
    root = path.parent
    patients = []
    for i, pid in enumerate(table["patient_id"]):
        t, e = table["time"].iloc[i], table["event"].iloc[i]
        row = table.iloc[i].to_dict()
        images = {}
        for modality, col in IMAGE_COLUMNS.items():
            if col in table.columns:
                images[modality] = [_resolve(root, rel) for rel in _split(row.get(col))]
        masks: list[Path | None] = []
        if MASK_COLUMN in table.columns:
            masks = _masks(row.get(MASK_COLUMN), len(images.get("ct", [])), root, path, str(pid))
        masks += [None] * (len(images.get("ct", [])) - len(masks))
        patients.append(ImagePatient(str(pid), float(t), int(e), images, masks, row))
    return ImageCohort(path=path, patients=patients, columns=list(table.columns))


def _masks(cell: object, n_ct: int, root: Path, path: Path, pid: str) -> list[Path | None]:
    """Tumour masks of one row, one per CT image; an empty entry (``a.nii;;c.nii``) = none."""
    if not _split(cell):
        return []
    entries = [s.strip() for s in str(cell).split(";")]
    if len(entries) != n_ct:
        entries = [e for e in entries if e]
    if len(entries) != n_ct:
        raise RadiopathInputError(
            f"{len(entries)} tumour mask(s) for {n_ct} CT image(s): give one mask per "
            "ct_image entry, in the same order (leave an entry empty for none)",
            path=path,
            patient_id=pid,
            field=MASK_COLUMN,
        )
    return [_resolve(root, e) if e else None for e in entries]


def _resolve(root: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else root / p


# --------------------------------------------------------------------------- resuming


def stored_fingerprint(path: Path) -> str | None:
    """The ``extract_fingerprint`` attribute of an embedding file, None if absent/unreadable."""
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as fh:
            value = fh.attrs.get("extract_fingerprint")
            n = fh["features"].shape[0] if "features" in fh else 0
    except OSError as exc:
        log.warning("%s is unreadable (%s); it is extracted again", path, exc)
        return None
    if value is None or n == 0:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- the run


def _per_modality(value, modalities: Sequence[str]) -> dict:
    """``"x"`` -> the same for every modality; ``{"wsi": .., "ct": ..}`` as is (its keys
    checked by :class:`~radiopath.extract.config.ExtractConfig`)."""
    if isinstance(value, Mapping):
        return {m: value.get(m) for m in modalities}
    return {m: value for m in modalities}


def extract_cohort(
    cohort_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ExtractConfig | Mapping | None = None,
    *,
    progress: bool = True,
    executor: ExecutorArg = None,
    encoder_kwargs: Mapping | None = None,
    **settings,
) -> Path:
    """Turn a cohort of slides and CT scans into embedding files and a new cohort CSV.

    Parameters
    ----------
    cohort_csv, out_dir
        Cohort table with ``wsi_image`` / ``ct_image`` / ``ct_mask`` columns (see
        :func:`read_image_cohort`); output folder (created; rerunning into it resumes).
    config
        The settings (:class:`~radiopath.extract.config.ExtractConfig`, or a mapping of its
        keys laid over the defaults; ``docs/config-extract.md``).
    progress
        Show progress bars.
    executor
        Where the images are extracted, one image per unit (:mod:`radiopath.executors`): an
        open executor, or the ``executor`` setting. Default this process; on Ray, one actor
        per worker (per GPU with ``gpus_per_task: 1``) holds the encoders, built once.
    encoder_kwargs
        Passed to every encoder's constructor.
    **settings
        Keys of :class:`~radiopath.extract.config.ExtractConfig` laid over ``config`` (None:
        left as it is), e.g. ``encoder={"wsi": "uni", "ct": "segvol"}``, ``checkpoint=...``,
        ``strict=True``, ``mpp=0.5``, ``ct_spacing=(1, 1, 1)``.

    Returns
    -------
    Path
        The new cohort CSV (``out_dir/cohort.csv``).
    """
    opened = executor if isinstance(executor, Executor) else None  # an open one is the caller's
    if executor is not None and opened is None:
        settings["executor"] = executor
    cfg = resolve_extract_config(config, settings)  # first: a wrong setting writes nothing
    cohort = read_image_cohort(cohort_csv)
    out = Path(out_dir)
    names, ckpts = _encoder_choice(cohort, cfg.encoder, cfg.checkpoint)
    opts = _RunOptions(cfg, progress, dict(encoder_kwargs or {}))
    with borrowed(opened if opened is not None else cfg.executor) as ex:
        encoders, dev = _build_encoders(ex, names, ckpts, opts)
        params = _parameters(cfg)
        record = _run_config(cohort_csv, out, ex, dev, encoders, params, opts)
        jobs = _jobs(cohort, cohort.modalities, out)
        missing = _missing_files(jobs, cfg.strict)
        with RunRecord(out, command="extract", config=record, seed=None) as run:
            report = _run_units(ex, jobs, missing, encoders, params, names, ckpts, opts)
            new_csv, report_path, counts = _write_outputs(cohort, out, jobs, report)
            run.update(outputs={"cohort": str(new_csv), "report": str(report_path)}, images=counts)
    _log_outcome(counts, len(report), report_path, new_csv)
    return new_csv


@dataclass(frozen=True)
class _RunOptions:
    """What the stages of :func:`extract_cohort` read: its settings, whether to show
    progress, and the encoders' extra arguments (``encoder_kwargs``, copied where it is
    stored or sent)."""

    settings: ExtractConfig
    progress: bool
    encoder_kwargs: dict


def _encoder_choice(
    cohort: ImageCohort, encoder: str | Mapping[str, str], checkpoint
) -> tuple[dict, dict]:
    """Per modality of ``cohort``, the encoder's registry name (checked) and checkpoint."""
    modalities = cohort.modalities
    if not modalities:
        raise RadiopathInputError("no patient lists an image", path=cohort.path)
    names = _per_modality(encoder, modalities)
    ckpts = _per_modality(checkpoint, modalities)
    for m in modalities:
        if names[m] is None:
            raise RadiopathInputError(f"no encoder given for modality {m!r}", field="encoder")
        get_encoder_spec(names[m])
    return names, ckpts


def _build_encoders(
    ex: Executor, names: Mapping[str, str], ckpts: Mapping, options: _RunOptions
) -> tuple[dict[str, PatchEncoder], torch.device]:
    """Every modality's encoder and the device it was built on.

    Built before any long work, so that a wrong name or checkpoint fails at once. For
    workers in other processes they are built on the CPU here, for the check and the
    encoders' configuration; each worker builds its own on its device.
    """
    dev = resolve_device("cpu" if ex.remote else options.settings.device)
    encoders: dict[str, PatchEncoder] = {}
    for m in names:
        encoders[m] = get_encoder(
            names[m],
            m,
            checkpoint=ckpts[m],
            random_init=options.settings.random_init,
            device=dev,
            **options.encoder_kwargs,
        )
    return encoders, dev


def _run_config(
    cohort_csv: str | os.PathLike,
    out: Path,
    ex: Executor,
    dev: torch.device,
    encoders: Mapping[str, PatchEncoder],
    params: Mapping[str, dict],
    options: _RunOptions,
) -> dict:
    """The resolved configuration recorded in ``run.json``."""
    return {
        "cohort": str(Path(cohort_csv).resolve()),
        "out": str(out.resolve()),
        "encoders": {m: encoders[m].config() for m in encoders},
        "params": {m: params[m] for m in encoders},
        "strict": options.settings.strict,
        "workers": int(options.settings.workers),
        "device": options.settings.device if ex.remote else str(dev),
        "batch_size": int(options.settings.batch_size),
        "random_init": bool(options.settings.random_init),
        "encoder_kwargs": dict(options.encoder_kwargs),
        "executor": ex.config.as_dict(),
    }


def _run_units(
    ex: Executor,
    jobs: Sequence[ExtractJob],
    missing: Mapping[int, RadiopathInputError],
    encoders: Mapping[str, PatchEncoder],
    params: Mapping[str, dict],
    names: Mapping[str, str],
    ckpts: Mapping,
    options: _RunOptions,
) -> list[dict]:
    """Extract every image that is neither missing nor resumed, one unit each on ``ex``,
    and return the report's rows (a failed image raised when strict)."""
    if ex.remote:
        spec = EncoderSetup(
            names,
            ckpts,
            options.settings.random_init,
            options.settings.device,
            dict(options.encoder_kwargs),
        )
        setup, shared = build_encoders, {"spec": spec}
    else:
        setup, shared = encoders_as_given, {"encoders": encoders}
    unit_options = {
        "workers": options.settings.workers,
        "batch_size": options.settings.batch_size,
        "progress": options.progress and not ex.remote,
    }
    report, todo = _plan(jobs, missing, encoders, params, options.encoder_kwargs)
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        desc="extract",
        unit="image",
        disable=not options.progress,
    )
    tasks = [
        (jobs[i], params[jobs[i].modality], cfg, fp, dict(unit_options)) for i, cfg, fp in todo
    ]
    with bar:
        for unit in ex.map_unordered(extract_unit, tasks, shared=shared, setup=setup):
            i = todo[unit.index][0]
            _record(report[i], jobs[i], unit.result(), options.settings.strict)
            bar.update()
    return report


def _write_outputs(
    cohort: ImageCohort, out: Path, jobs: Sequence[ExtractJob], report: Sequence[dict]
) -> tuple[Path, Path, dict[str, int]]:
    """Write the new cohort table and the report; return their paths and the count of
    images per status."""
    done: dict[tuple[str, str], list[Path]] = {}
    for job, row in zip(jobs, report):
        if row["status"] in ("ok", "resumed"):
            done.setdefault((job.patient.patient_id, job.modality), []).append(job.output)
    new_csv = _write_new_cohort(cohort, out / "cohort.csv", done)
    report_path = write_csv(
        pd.DataFrame(report, columns=list(_REPORT_COLUMNS)), out / "extract_report.csv"
    )
    counts = {s: sum(r["status"] == s for r in report) for s in ("ok", "resumed", "failed")}
    return new_csv, report_path, counts


def _log_outcome(counts: Mapping[str, int], n: int, report_path: Path, new_csv: Path) -> None:
    if counts["failed"]:
        log.warning("%d of %d image(s) failed; see %s", counts["failed"], n, report_path)
    log.info(
        "extracted %d, resumed %d, failed %d -> %s",
        counts["ok"],
        counts["resumed"],
        counts["failed"],
        new_csv,
    )


_REPORT_COLUMNS = (
    "patient_id",
    "modality",
    "image",
    "mask",
    "output",
    "status",
    "n_patches",
    "seconds",
    "message",
)


def _parameters(cfg: ExtractConfig) -> dict[str, dict]:
    """Per modality, the patching parameters recorded in every embedding's fingerprint."""
    return {
        "wsi": {
            "mpp": float(cfg.mpp),
            "patch_size": int(cfg.patch_size),
            "slide_mpp": cfg.slide_mpp,
            "min_tissue": float(cfg.min_tissue),
        },
        "ct": {
            "spacing": [float(s) for s in cfg.ct_spacing],
            "patch_size": int(cfg.ct_patch_size),
            "margin_mm": float(cfg.ct_margin_mm),
            "min_fraction": float(cfg.ct_min_fraction),
            "normalisation": cfg.ct_normalisation,
        },
    }


def _jobs(cohort: ImageCohort, modalities: Sequence[str], out: Path) -> list[ExtractJob]:
    jobs = []
    for p in cohort.patients:
        for m in modalities:
            for k, image in enumerate(p.images.get(m, [])):
                suffix = "" if k == 0 else f".{k}"
                name = f"{safe_filename(p.patient_id)}.{m}{suffix}.h5"
                mask = p.masks[k] if m == "ct" else None
                jobs.append(ExtractJob(p, m, k, image, mask, out / "embeddings" / name))
    return jobs


def _missing_files(jobs: Sequence[ExtractJob], strict: bool) -> dict[int, RadiopathInputError]:
    """A missing file is known before any work: reported up front (raised when strict),
    by job position."""
    missing = {}
    for i, job in enumerate(jobs):
        for kind, f in (("image", job.image), ("mask", job.mask)):
            if f is not None and not f.exists():
                col = IMAGE_COLUMNS[job.modality] if kind == "image" else MASK_COLUMN
                err = RadiopathInputError(
                    f"{kind} file does not exist",
                    path=f,
                    patient_id=job.patient.patient_id,
                    field=col,
                )
                if strict:
                    raise err
                missing.setdefault(i, err)
    return missing


def _plan(jobs, missing, encoders, params, encoder_kwargs) -> tuple[list[dict], list[tuple]]:
    """The report's rows (missing files failed, files with the same fingerprint resumed)
    and ``(job position, job config, fingerprint)`` of every image still to extract."""
    report, todo = [], []
    for i, job in enumerate(jobs):
        row = {
            "patient_id": job.patient.patient_id,
            "modality": job.modality,
            "image": str(job.image),
            "mask": "" if job.mask is None else str(job.mask),
            "output": "",
            "status": "",
            "n_patches": 0,
            "seconds": 0.0,
            "message": "",
        }
        report.append(row)
        if i in missing:
            row.update(status="failed", message=str(missing[i]))
            log.warning("skipped: %s", missing[i])
            continue
        job_config = {
            "format": FORMAT_VERSION,
            "modality": job.modality,
            "encoder": encoders[job.modality].config(),
            "params": params[job.modality],
            "image": file_identity(job.image),
            "mask": file_identity(job.mask),
            "encoder_kwargs": dict(encoder_kwargs),
        }
        fp = config_fingerprint(job_config)
        if stored_fingerprint(job.output) == fp:
            row.update(status="resumed", output=str(job.output))
        else:
            todo.append((i, job_config, fp))
    return report, todo


def _record(row: dict, job: ExtractJob, result: Mapping, strict: bool) -> None:
    """Enter a unit's outcome in its report row (a failed image: raised when strict)."""
    if result["status"] == "failed":
        err = result["error"]
        if strict:
            raise err
        log.warning("skipped: %s", err)
        row.update(status="failed", message=str(err), seconds=result["seconds"])
    else:
        row.update(
            status="ok",
            output=str(job.output),
            n_patches=result["n_patches"],
            seconds=result["seconds"],
        )


def _write_new_cohort(
    cohort: ImageCohort, path: Path, done: Mapping[tuple[str, str], list[Path]]
) -> Path:
    """The input table with ``wsi``/``ct`` set to the embedding files, paths relative to ``path``."""
    root = path.parent.resolve()

    def rel(files) -> str:
        return ";".join(os.path.relpath(Path(f).resolve(), root) for f in files)

    rows = []
    for p in cohort.patients:
        row = dict(p.row)
        for m in MODALITIES:
            row[m] = rel(done.get((p.patient_id, m), []))
        for m, col in IMAGE_COLUMNS.items():
            if col in row:
                row[col] = rel(p.images.get(m, []))
        if MASK_COLUMN in row:
            masks = [rel([f]) if f is not None else "" for f in p.masks]
            row[MASK_COLUMN] = ";".join(masks) if any(masks) else ""
        rows.append(row)
    clinical = [c for c in cohort.columns if c not in RESERVED_COLUMNS]
    images = [c for c in (*IMAGE_COLUMNS.values(), MASK_COLUMN) if c in cohort.columns]
    columns = ["patient_id", "time", "event", *MODALITIES, *images, *clinical]
    return write_csv(pd.DataFrame(rows, columns=columns), path)
