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
    "ct-patch-knn) or YAML path (its keys: docs/config-graph.md); repeat for several "
    "modalities. Default: each modality's.",
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
@click.option(
    "--stats",
    is_flag=True,
    help="Also write OUT/statistics.csv: nodes, edges, degree, connected components and "
    "clustering of every graph (networkx).",
)
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
    stats: bool,
    quiet: bool,
    executor_name: str | None,
    address: str | None,
) -> None:
    """Build the spatial graph of every embedding file of a cohort.

    Writes OUT/manifest.csv (patient_id, modality, source, graph, n_patches, n_nodes,
    n_edges), OUT/failed.csv and one graph file per embedding file; with --stats also
    OUT/statistics.csv.
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
    if stats:
        _write_statistics(out, quiet)


def _write_statistics(out: Path, quiet: bool) -> None:
    from tqdm.auto import tqdm

    from radiopath.graph.statistics import cohort_graph_statistics
    from radiopath.runkit import write_csv

    table = cohort_graph_statistics(
        out, progress=None if quiet else lambda it, total: tqdm(it, total=total, desc="statistics")
    )
    write_csv(table, out / "statistics.csv")
    for modality, part in table.groupby("modality"):
        click.echo(
            f"{modality}: median {part.n_components.median():g} connected component(s), "
            f"{part.isolated_nodes.median():g} isolated node(s), mean degree "
            f"{part.mean_degree.median():.1f}, clustering {part.clustering.median():.2f}"
        )
    click.echo(f"statistics: {out / 'statistics.csv'}")
