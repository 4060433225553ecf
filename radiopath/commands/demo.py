"""``radiopath demo``: the whole pipeline on the embedded synthetic cohort."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from radiopath.cli import friendly_errors, main
from radiopath.config import RunRecord
from radiopath.datasets import SyntheticConfig, make_synthetic_cohort
from radiopath.io import read_cohort

log = logging.getLogger(__name__)


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("radiopath-demo"),
    show_default=True,
    help="Run directory.",
)
@click.option("--patients", type=int, default=SyntheticConfig.n_patients, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@friendly_errors
def demo(out: Path, patients: int, seed: int) -> None:
    """Make the embedded synthetic cohort and run the pipeline on it."""
    config = {"synthetic": {"n_patients": patients, "seed": seed}}
    with RunRecord(out, command="demo", config=config, seed=seed) as run:
        cohort_csv = make_synthetic_cohort(out / "cohort", n_patients=patients, seed=seed)
        cohort = read_cohort(cohort_csv, strict=True)
        run.update(
            cohort={
                "csv": str(cohort_csv),
                "patients": len(cohort),
                "events": int(cohort.events.sum()),
                "modalities": cohort.modalities,
            }
        )
    click.echo(
        f"synthetic cohort: {len(cohort)} patients, {int(cohort.events.sum())} events, "
        f"modalities {', '.join(cohort.modalities)} -> {cohort_csv}"
    )
