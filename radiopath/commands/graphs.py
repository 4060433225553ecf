"""``radiopath graphs``: embedding files -> spatial graphs (one binary file per slide/scan)."""

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
    help="Graph folder (an existing one is resumed: built graphs are skipped).",
)
@click.option(
    "--preset",
    "presets",
    multiple=True,
    help="Preset name (wsi-clustered, wsi-slidegraph, wsi-patch-knn, ct-clustered-3d, "
    "ct-patch-knn) "
    "or YAML path; repeat for several modalities. Default: each modality's.",
)
@click.option("--modalities", help="Comma-separated imaging modalities (default: all present).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes building graphs in parallel.",
)
@click.option("--strict", is_flag=True, help="Stop at the first bad file instead of skipping it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@executor_options
@friendly_errors
def graphs(
    cohort: Path,
    out: Path,
    presets: tuple[str, ...],
    modalities: str | None,
    workers: int,
    strict: bool,
    quiet: bool,
    executor_name: str | None,
    address: str | None,
) -> None:
    """Build the spatial graph of every embedding file of a cohort.

    Writes OUT/manifest.csv (patient_id, modality, source, graph, n_patches, n_nodes,
    n_edges), OUT/failed.csv and one graph file per embedding file.
    """
    from radiopath.graph import build_cohort_graphs
    from radiopath.io import read_cohort

    table = read_cohort(cohort, strict=strict)
    preset = None if not presets else (presets[0] if len(presets) == 1 else list(presets))
    manifest = build_cohort_graphs(
        table,
        out,
        preset=preset,
        workers=workers,
        strict=strict,
        progress=not quiet,
        modalities=parse_list(modalities),
        executor=executor_setting(executor_name, address),
    )
    failed = manifest.attrs.get("failed")
    for modality, part in manifest.groupby("modality"):
        click.echo(
            f"{modality}: {len(part)} graph(s), median {int(part.n_nodes.median())} nodes "
            f"from {int(part.n_patches.median())} patches"
        )
    if failed is not None and len(failed):
        click.echo(f"{len(failed)} file(s) skipped, see {out / 'failed.csv'}", err=True)
    click.echo(f"manifest: {out / 'manifest.csv'}")
