"""``radiopath evaluate``: downstream models and metrics on a training run's fold embeddings."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from radiopath.cli import executor_options, executor_setting, friendly_errors, main, parse_list
from radiopath.config import load_config_file, naming_file

log = logging.getLogger(__name__)


@main.command()
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Training run directory (run.json + embeddings/fold_<k>.npz).",
)
@click.option(
    "--models",
    default="rsf,coxph,coxnet,fsvm",
    show_default=True,
    help="Comma-separated downstream models: rsf,coxph,coxnet,fsvm.",
)
@click.option(
    "--backend",
    type=click.Choice(["sksurv", "torch"]),
    default="sksurv",
    show_default=True,
    help="scikit-survival (reference) or batched torch (RSF stays scikit-survival).",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto, cpu or cuda (torch backend)."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML/JSON file with evaluation settings (grids, screening, metrics).",
)
@click.option(
    "--no-resume", is_flag=True, help="Recompute even if this evaluation already finished."
)
@executor_options
@friendly_errors
def evaluate(
    run_dir: Path,
    models: str,
    backend: str,
    device: str,
    config_file: Path | None,
    no_resume: bool,
    executor_name: str | None,
    address: str | None,
) -> None:
    """Fit RSF, CoxPH, Coxnet and FSVM on each fold's embeddings; write metrics and summary."""
    from radiopath.evaluation import evaluate_run, summarize
    from radiopath.evaluation.config import resolve_evaluation_config

    config = load_config_file(config_file) if config_file is not None else None
    with naming_file(config_file, config, "" if "evaluation" in (config or {}) else "evaluation"):
        resolve_evaluation_config(config)
    result = evaluate_run(
        run_dir,
        models=parse_list(models),
        backend=backend,
        config=config,
        device=device,
        resume=not no_resume,
        executor=executor_setting(executor_name, address),
    )
    n_failed = int(result.metrics["value"].isna().sum())
    click.echo(summarize(result.metrics))
    click.echo(
        f"wrote predictions.csv, metrics.csv, selection.csv, summary.md and figures/ to {run_dir}"
    )
    if n_failed:
        click.echo(
            f"{n_failed} metric value(s) failed or undefined; see metrics.csv (status, message)",
            err=True,
        )
