"""``radiopath train``: one aggregator under cross-validation (embeddings, risks, importance)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from radiopath.cli import executor_options, executor_setting, friendly_errors, main, parse_list
from radiopath.config import load_config_file, naming_file

log = logging.getLogger(__name__)


@main.command()
@click.option(
    "--cohort",
    "cohort_csv",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cohort CSV.",
)
@click.option(
    "--graphs",
    "graphs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder written by `radiopath graphs`; omit to build graphs in memory.",
)
@click.option("--aggregator", required=True, help="sparra, abmil or mean.")
@click.option(
    "--modalities",
    default="wsi,ct",
    show_default=True,
    help="Comma-separated: wsi, ct, clinical (the cohort's clinical columns).",
)
@click.option(
    "--fusion",
    default=None,
    help="How modality vectors are combined: concat (default), mean, attention or late.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML/JSON file overriding the training defaults and the preset; every key is in "
    "docs/config-training.md.",
)
@click.option(
    "--preset",
    default=None,
    help="Training preset: learned (default, the recipe), paper, reference or interpretable (see the README).",
)
@click.option(
    "--importance",
    default=None,
    help="How node weights reach the patches: selection or receptive_field (the learned preset's default).",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Training epochs (default: the preset's schedule; the default recipe runs 400 optimiser steps).",
)
@click.option(
    "--folds", "n_folds", type=int, default=None, help="Number of outer folds (default 5)."
)
@click.option(
    "--seed", type=int, default=None, help="Seed of the folds and the models (default 0)."
)
@click.option(
    "--repeats",
    type=int,
    default=1,
    show_default=True,
    help="Repeated cross-validation: R stratified splits (seeds seed..seed+R-1).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--folds-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Reuse a folds file (patient_id, [repeat,] fold), e.g. another run's folds.csv.",
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Skip finished folds and continue an interrupted one.",
)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable file or missing graph.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@executor_options
@friendly_errors
def train(
    cohort_csv,
    graphs_dir,
    aggregator,
    modalities,
    fusion,
    out_dir,
    config_file,
    preset,
    importance,
    epochs,
    n_folds,
    seed,
    repeats,
    device,
    folds_file,
    resume,
    strict,
    quiet,
    executor_name,
    address,
) -> None:
    """Train one aggregator under outer cross-validation.

    The configuration is laid out in layers: the defaults, the preset, the --config file,
    then the flags; docs/config-training.md lists every key with its default and allowed
    values. Writes folds.csv, logs/, checkpoints/, embeddings/fold_<k>.npz, risks.csv and
    importance/<aggregator>/<patient_id>.<modality>.csv to OUT.
    """
    from radiopath.training import train_cross_validated
    from radiopath.training.config import resolve_training_config

    from_file = load_config_file(config_file) if config_file is not None else {}
    overrides = {
        "preset": preset,
        "fusion": fusion,
        "importance": importance,
        "epochs": epochs,
        "folds": n_folds,
        "seed": seed,
        "strict": strict or None,
    }
    config = {**from_file, **{k: v for k, v in overrides.items() if v is not None}}
    with naming_file(config_file, from_file, overrides=overrides):  # a file's keys: named so
        resolve_training_config(config, aggregator=aggregator, modalities=parse_list(modalities))
    result = train_cross_validated(
        cohort_csv,
        graphs_dir,
        aggregator=aggregator,
        modalities=parse_list(modalities),
        out_dir=out_dir,
        config=config,
        folds=folds_file,
        device=device,
        resume=resume,
        progress=not quiet,
        repeats=repeats,
        executor=executor_setting(executor_name, address),
    )
    for k, c in sorted(result.fold_c_index.items()):
        click.echo(f"fold {k}: test C-index {c:.3f}")
    click.echo(
        f"{aggregator} on {'+'.join(parse_list(modalities))}: mean test C-index "
        f"{result.mean_c_index:.3f} -> {out_dir}"
    )
