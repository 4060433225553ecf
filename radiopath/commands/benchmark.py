"""``radiopath benchmark``, ``radiopath report`` and ``radiopath importance``."""

from __future__ import annotations

from pathlib import Path

import click

from radiopath.cli import executor_options, executor_setting, friendly_errors, main, parse_list


@main.command()
@click.option(
    "--cohort",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cohort CSV (INTERFACE.md).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (an existing one is resumed).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML/JSON configuration; flags override it.",
)
@click.option("--aggregators", help="Comma-separated, e.g. sparra,abmil,mean.")
@click.option("--models", help="Comma-separated downstream models: rsf,coxph,coxnet,fsvm.")
@click.option("--modalities", help="Comma-separated: wsi,ct[,clinical].")
@click.option("--folds", type=int, help="Outer cross-validation folds.")
@click.option("--repeats", type=int, help="Repeated cross-validation: R splits of the cohort.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--device", help="auto, cpu, cuda, cuda:1, mps.")
@click.option(
    "--epochs", type=int, help="Training epochs per fold (default: the training preset's schedule)."
)
@click.option("--backend", type=click.Choice(["sksurv", "torch"]), help="Downstream backend.")
@click.option(
    "--graph-preset",
    "graph_preset",
    help="Graph preset name or YAML path (default: each modality's; the training preset is "
    "train.preset in --config).",
)
@click.option("--bootstrap", type=int, help="Bootstrap replicates of the intervals and tests.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable file.")
@executor_options
@friendly_errors
def benchmark(
    cohort,
    out,
    config_file,
    aggregators,
    models,
    modalities,
    folds,
    repeats,
    seed,
    device,
    epochs,
    backend,
    graph_preset,
    bootstrap,
    strict,
    executor_name,
    address,
):
    """Graphs -> aggregators on the same folds -> downstream models -> metrics and report."""
    from radiopath.benchmark import run_benchmark

    overrides = {
        "aggregators": parse_list(aggregators),
        "models": parse_list(models),
        "modalities": parse_list(modalities),
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        "device": device,
        "train": {"epochs": epochs},
        "evaluation": {"backend": backend},
        "graph": {"preset": graph_preset},
        "statistics": {"bootstrap": bootstrap},
        "executor": executor_setting(executor_name, address),
    }
    result = run_benchmark(cohort, out, overrides, config_file=config_file, strict=strict)
    click.echo(result.summary)
    click.echo(f"\nrun directory: {out} (report.html, figures/, metrics.csv, importance/)")


@main.command()
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="A benchmark, an evaluated training run or a sweep folder.",
)
@click.option(
    "--runs",
    "compare",
    is_flag=True,
    help="Put the run folders given as arguments side by side (with --out).",
)
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the comparison page of --runs.",
)
@click.option(
    "--reference",
    help="A published table to read beside the run (sparra-table1); alone: print it.",
)
@click.option("--bootstrap", type=int, help="Bootstrap replicates (default: the run's, or 1000).")
@click.option("--alpha", type=float, help="Level of the intervals and tests (default 0.05).")
@click.option("--seed", type=int, help="Seed of the bootstrap resampling.")
@click.option("--patients", help="Comma-separated patients of the importance gallery.")
@click.option("--horizon", type=float, help="Time of the calibration plot (default: see README).")
@friendly_errors
def report(run_dir, compare, run_dirs, out, reference, bootstrap, alpha, seed, patients, horizon):
    """Tables, intervals, paired tests, figures and one HTML page of a finished run
    (summary.md, intervals.csv, comparisons.csv, figures/, report.html); of a sweep folder
    or of several runs (--runs A B ... --out DIR), one page with the runs side by side."""
    from radiopath.errors import RadiopathInputError
    from radiopath.report.compare import is_sweep, write_comparison

    if run_dirs and not compare:
        raise RadiopathInputError(
            "give --runs to compare run folders, or --run DIR for one", field="runs"
        )
    if compare:
        page = write_comparison(run_dirs, out, alpha=alpha or 0.05)
        click.echo(f"report: {page}")
        return
    if run_dir is None:
        if reference is None:
            raise RadiopathInputError("give --run DIR, --reference NAME or both", field="run")
        from radiopath.reference import summarize_reference

        click.echo(summarize_reference(reference))
        return
    if is_sweep(run_dir):
        click.echo(f"report: {write_comparison(sweep=run_dir, alpha=alpha or 0.05)}")
        return
    from radiopath.report import write_report

    stats = {"bootstrap": bootstrap, "alpha": alpha, "seed": seed}
    written = write_report(
        run_dir,
        statistics={k: v for k, v in stats.items() if v is not None},
        reference=reference,
        patients=parse_list(patients),
        horizon=horizon,
    )
    click.echo(Path(written["summary"]).read_text())
    if "reference" in written:
        click.echo(Path(written["reference"]).read_text())
    click.echo(f"report: {written['html']}")


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--patient", required=True, help="Patient id.")
@click.option("--aggregators", help="Comma-separated; default: every aggregator in the run.")
@click.option(
    "--cohort",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cohort CSV (default: the one recorded in run.json).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the PNGs (default: the run's importance/ folder).",
)
@friendly_errors
def importance(run_dir, patient, aggregators, cohort, out):
    """Importance maps (PNG) of one patient over the slide and CT slices."""
    from radiopath.viz.importance import write_importance_maps

    for path in write_importance_maps(
        run_dir, patient, aggregators=parse_list(aggregators), cohort_csv=cohort, out_dir=out
    ):
        click.echo(str(path))


@main.command()
@click.option(
    "--experiment",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Experiment YAML (see experiments/).",
)
@click.option("--cohort", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--epochs", type=int, help="Override the training epochs of every point.")
@click.option("--folds", type=int, help="Override the outer folds of every point.")
@click.option("--backend", type=click.Choice(["sksurv", "torch"]), help="Downstream backend.")
@executor_options
@friendly_errors
def sweep(experiment, cohort, out, epochs, folds, backend, executor_name, address):
    """Expand an experiment's grid into benchmark runs and gather their metrics."""
    from radiopath.sweep import run_sweep

    overrides = {"train": {"epochs": epochs}, "folds": folds, "evaluation": {"backend": backend}}
    gathered = run_sweep(
        experiment,
        cohort,
        out,
        overrides=overrides,
        executor=executor_setting(executor_name, address),
    )
    table = gathered[gathered.metric == "c_index"].groupby(["point", "aggregator"]).value.mean()
    click.echo(table.to_string())
    click.echo(f"\nall metrics: {out / 'sweep_metrics.csv'}; curves: {out / 'figures'}")
    click.echo(f"report: {out / 'report.html'}")
