"""``radiopath extract``: image files of a cohort -> patch-embedding files and a new cohort CSV."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from radiopath.cli import executor_options, executor_setting, friendly_errors, main, parse_list
from radiopath.config import load_config_file
from radiopath.errors import RadiopathInputError

log = logging.getLogger(__name__)


def parse_per_modality(value: str | None, option: str) -> str | dict[str, str] | None:
    """``"NAME"`` -> ``"NAME"``; ``"wsi=A,ct=B"`` -> ``{"wsi": "A", "ct": "B"}``."""
    if value is None or "=" not in value:
        return value
    out = {}
    for item in parse_list(value) or []:
        key, sep, val = item.partition("=")
        if not sep or key.strip() not in ("wsi", "ct") or not val.strip():
            raise RadiopathInputError(
                f"expected NAME or wsi=NAME,ct=NAME, got {value!r}", field=option
            )
        out[key.strip()] = val.strip()
    return out


def parse_spacing(value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in parse_list(value) or []]
    except ValueError as exc:
        raise RadiopathInputError(
            f"expected 3 numbers like 1,1,1, got {value!r}", field="ct-spacing"
        ) from exc
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise RadiopathInputError(
            f"expected 3 numbers like 1,1,1, got {value!r}", field="ct-spacing"
        )
    return parts


@main.command()
@click.option(
    "--cohort",
    "cohort_csv",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cohort CSV with wsi_image / ct_image / ct_mask columns.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (rerun to resume).",
)
@click.option(
    "--encoder",
    default=None,
    help="Encoder name, or wsi=NAME,ct=NAME  [default: handcrafted]. "
    "Known: handcrafted, resnet18, uni, conch, chief, segvol.",
)
@click.option(
    "--checkpoint",
    default=None,
    help="Local weights file, or wsi=PATH,ct=PATH (nothing is downloaded).",
)
@click.option(
    "--workers", type=int, default=None, help="Tile-reading worker processes [default: 0]."
)
@click.option(
    "--strict",
    is_flag=True,
    default=None,
    help="Stop at the first unreadable image instead of skipping it.",
)
@click.option("--device", default=None, help="auto, cpu, cuda, ...  [default: auto]")
@click.option(
    "--batch-size", type=int, default=None, help="Patches per encoder call [default: 64]."
)
@click.option("--mpp", type=float, default=None, help="WSI tile resolution, um/px [default: 0.5].")
@click.option(
    "--patch-size", type=int, default=None, help="WSI tile side in pixels at --mpp [default: 224]."
)
@click.option(
    "--slide-mpp", type=float, default=None, help="Level-0 um/px for slides that do not record it."
)
@click.option("--ct-spacing", default=None, help="CT voxel size in mm, x,y,z [default: 1,1,1].")
@click.option(
    "--ct-patch-size", type=int, default=None, help="CT cube side in voxels [default: 16]."
)
@click.option(
    "--ct-margin",
    "ct_margin_mm",
    type=float,
    default=None,
    help="Margin around the tumour mask, mm [default: 5].",
)
@click.option(
    "--ct-normalisation",
    type=click.Choice(["auto", "none", "med3d"]),
    default=None,
    help="CT intensities: the encoder's (auto), HU (none) or MeD-3D [default: auto].",
)
@click.option(
    "--random-init",
    is_flag=True,
    default=None,
    help="Allow random weights for encoders that need a checkpoint (timing/tests only).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML/JSON file with these settings (flags override it).",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@executor_options
@friendly_errors
def extract(
    cohort_csv: Path,
    out: Path,
    config_file: Path | None,
    no_progress: bool,
    executor_name: str | None,
    address: str | None,
    **flags,
) -> None:
    """Image files (cohort columns wsi_image, ct_image, ct_mask) -> embedding files.

    Writes OUT/embeddings/*.h5, OUT/cohort.csv (pointing at them, ready for
    `radiopath graphs`), OUT/extract_report.csv and OUT/run.json. A missing or unreadable
    image is reported and skipped unless --strict. Every key of --config, with its default
    and the values it takes: docs/config-extract.md.
    """
    from radiopath.extract import extract_cohort
    from radiopath.extract.config import ExtractConfig, resolve_extract_config

    flags["encoder"] = parse_per_modality(flags["encoder"], "encoder")
    flags["checkpoint"] = parse_per_modality(flags["checkpoint"], "checkpoint")
    flags["ct_spacing"] = parse_spacing(flags["ct_spacing"])
    flags["executor"] = executor_setting(executor_name, address)
    from_file = load_config_file(config_file) if config_file is not None else {}
    # defaults <- file <- flags: a bad key is named with the file it came from, a bad flag
    # by its key alone
    cfg = resolve_extract_config(ExtractConfig.from_mapping(from_file, file=config_file), flags)
    new_csv = extract_cohort(cohort_csv, out, cfg, progress=not no_progress)
    report = out / "extract_report.csv"
    import pandas as pd

    status = pd.read_csv(report)["status"].value_counts().to_dict()
    click.echo(
        f"{status.get('ok', 0)} extracted, {status.get('resumed', 0)} resumed, "
        f"{status.get('failed', 0)} failed -> {new_csv}"
    )
    if status.get("failed", 0):
        click.echo(f"failures are listed in {report}", err=True)
