"""Graphs for a whole cohort: parallel across files (any executor), resumable, with a manifest.

Layout of the output folder::

    <out_dir>/manifest.csv              one row per built graph
    <out_dir>/failed.csv                files that could not be built, and why
    <out_dir>/<modality>/<patient_id>/<file stem>.pt

``manifest.csv`` has the columns ``patient_id, modality, source, graph, n_patches, n_nodes,
n_edges`` (``graph`` relative to ``out_dir``, ``source`` the embedding file). A graph file
already built from the same input file (same :func:`~radiopath.runkit.file_fingerprint`: size
and modification time) with the same configuration (same ``config_hash``,
:func:`~radiopath.runkit.config_fingerprint` of its settings) is not rebuilt: the graph file
records both in its ``build_config``, so it is its own ledger entry.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from torch_geometric.data import Data
from tqdm.auto import tqdm

from radiopath.config import KeysOf, check_known_keys, config_section
from radiopath.errors import RadiopathInputError
from radiopath.executors import Executor, ExecutorArg, borrowed
from radiopath.graph.build import build_graph
from radiopath.graph.config import MODALITY_DEFAULTS, GraphConfig, load_preset
from radiopath.graph.storage import load_graph, read_graph_meta, save_graph
from radiopath.io import Cohort, embedding_width, read_cohort, read_embeddings
from radiopath.runkit import (
    WriteError,
    file_fingerprint,
    safe_filename,
    write_csv,
)

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["patient_id", "modality", "source", "graph", "n_patches", "n_nodes", "n_edges"]
FAILED_COLUMNS = ["patient_id", "modality", "source", "error"]
PresetArg = str | os.PathLike | Mapping | GraphConfig | Sequence | None


@dataclass
class _Job:
    patient_id: str
    modality: str
    source: str
    graph: str  # relative to out_dir
    config: GraphConfig
    config_hash: str


def resolve_cohort_presets(preset: PresetArg, modalities: Sequence[str]) -> dict[str, GraphConfig]:
    """The configuration for each modality.

    ``preset`` may be None (each modality's default), one preset (a name, path or mapping;
    a modality-specific preset applies to its modality and the others keep their default,
    a modality-free one applies to all), a list of presets, or a mapping
    ``{modality: preset}``.
    """
    chosen: dict[str, object] = {}
    # errors name the key: preset.<key>, preset.<modality>.<key>, preset[<i>].<key> (a
    # preset file's errors name the file and its key)
    per_modality = isinstance(preset, Mapping) and bool(set(preset) & set(MODALITY_DEFAULTS))
    if per_modality:
        one = KeysOf(tuple(GraphConfig.known_keys()), scalar=True)  # a name, a path or keys
        check_known_keys(preset, KeysOf(tuple(MODALITY_DEFAULTS), one), "preset")
        chosen.update(preset)
    elif preset is not None:
        items = list(preset) if isinstance(preset, (list, tuple)) else [preset]
        for i, item in enumerate(items):
            where = f"preset[{i}]" if isinstance(preset, (list, tuple)) else "preset"
            with config_section(where, whole="preset"):
                cfg = load_preset(item)
            targets = [cfg.modality] if cfg.modality else list(modalities)
            for m in targets:
                if m in chosen:
                    raise RadiopathInputError(
                        f"two presets given for modality {m!r}", field="preset"
                    )
                chosen[m] = cfg
    configs = {}
    for m in modalities:
        with config_section(f"preset.{m}" if per_modality else "preset", whole="preset"):
            configs[m] = load_preset(chosen.get(m), m)
    return configs


def _build_one(job: _Job, out_dir: str) -> dict:
    """Build and save one graph (runs in a worker process)."""
    bag = read_embeddings(job.source, modality=job.modality)
    graph = build_graph(bag, job.config)
    graph.build_config["input_fingerprint"] = file_fingerprint(job.source)
    save_graph(Path(out_dir) / job.graph, graph)
    return {
        "n_patches": int(graph.assignment.numel()),
        "n_nodes": int(graph.num_nodes),
        "n_edges": int(graph.edge_index.size(1)),
    }


def _up_to_date(job: _Job, out_dir: Path) -> dict | None:
    path = out_dir / job.graph
    if not path.exists():
        return None
    try:
        meta = read_graph_meta(path)
    except RadiopathInputError as exc:
        log.warning("%s; the graph is built again", exc)
        return None
    cfg = meta.get("build_config") or {}
    if cfg.get("config_hash") != job.config_hash:
        return None
    if cfg.get("input_fingerprint") != file_fingerprint(job.source):
        log.warning(
            "%s changed since graph %s was built from it; the graph is built again",
            job.source,
            path,
        )
        return None
    return {
        "n_patches": meta.get("n_patches", 0),
        "n_nodes": meta["n_nodes"],
        "n_edges": meta["n_edges"],
    }


def build_cohort_graphs(
    cohort: Cohort | str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: PresetArg = None,
    workers: int = 1,
    strict: bool = False,
    progress: bool = True,
    modalities: Sequence[str] | None = None,
    executor: ExecutorArg = None,
) -> pd.DataFrame:
    """Build the graph of every embedding file of a cohort.

    Parameters
    ----------
    cohort
        A :class:`~radiopath.io.Cohort` or the path of a cohort CSV.
    out_dir
        Output folder (see the module docstring for its layout); an existing one is resumed.
    preset
        None for each modality's default, a preset (name, path or mapping), a list of
        presets, or ``{modality: preset}`` (see :func:`resolve_cohort_presets`).
    workers
        Processes building graphs in parallel (one file per task), when no ``executor``
        is given.
    strict
        Raise on the first bad file instead of reporting it and going on.
    progress
        Show a progress bar.
    modalities
        Imaging modalities to build (default: all the cohort has).
    executor
        Where the graphs are built, one file per unit (:mod:`radiopath.executors`):
        ``"local"``, ``"ray"``, a mapping such as ``{"name": "ray", "address": "auto"}``, or
        an open executor. Default: this process, or ``workers`` local processes.

    Returns
    -------
    pandas.DataFrame
        The manifest (also written to ``<out_dir>/manifest.csv``), in cohort order; files
        that failed are in ``.attrs["failed"]`` and ``<out_dir>/failed.csv``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise RadiopathInputError(f"must be an integer >= 1, got {workers!r}", field="workers")
    # the presets are checked before the cohort's files are opened (for every modality when
    # the cohort is to tell which ones it has)
    resolve_cohort_presets(preset, list(modalities or MODALITY_DEFAULTS))
    if not isinstance(cohort, Cohort):
        cohort = read_cohort(cohort, strict=strict)
    modalities = list(modalities) if modalities is not None else cohort.modalities
    configs = resolve_cohort_presets(preset, modalities)
    spec = executor if executor is not None else {"name": "local", "workers": workers}
    with borrowed(spec) as ex:  # a bad executor setting is refused before anything is written
        return _build_all(cohort, Path(out_dir), configs, modalities, strict, progress, ex)


def _build_all(
    cohort: Cohort,
    out: Path,
    configs: Mapping[str, GraphConfig],
    modalities: Sequence[str],
    strict: bool,
    progress: bool,
    ex: Executor,
) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    failures = _Failures(strict)
    for problem in cohort.problems:
        if problem.field in modalities:
            failures.add(problem.patient_id, problem.field, problem.path, problem.message)
    jobs = _plan_jobs(cohort, configs, modalities)
    jobs = _drop_odd_widths(jobs, modalities, failures)
    results = _run_jobs(jobs, out, ex, progress, failures)

    rows = [
        {
            "patient_id": job.patient_id,
            "modality": job.modality,
            "source": job.source,
            "graph": job.graph,
            **results[idx],
        }
        for idx, job in enumerate(jobs)
        if idx in results
    ]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    failed_frame = pd.DataFrame(failures.rows, columns=FAILED_COLUMNS)
    write_csv(manifest, out / "manifest.csv")
    write_csv(failed_frame, out / "failed.csv")
    manifest.attrs["failed"] = failed_frame
    manifest.attrs["root"] = str(out.resolve())
    return manifest


class _Failures:
    """The files that could not be built: raised at once when ``strict``, else logged and kept."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.rows: list[dict] = []

    def add(self, patient_id: str | None, modality: str | None, source: str | None, message: str):
        exc = RadiopathInputError(message, path=source, patient_id=patient_id, field=modality)
        if self.strict:
            raise exc
        log.warning("skipped: %s", exc)
        self.rows.append(
            {"patient_id": patient_id, "modality": modality, "source": source, "error": message}
        )

    def add_job(self, job: _Job, message: str):
        self.add(job.patient_id, job.modality, job.source, message)


def _plan_jobs(
    cohort: Cohort, configs: Mapping[str, GraphConfig], modalities: Sequence[str]
) -> list[_Job]:
    """One job per embedding file, in cohort order; a patient's files of one modality with
    the same name get ``-2``, ``-3``, ... graph names."""
    jobs: list[_Job] = []
    for patient in cohort.patients:
        for m in modalities:
            used: set[str] = set()
            for f in patient.files.get(m, []):
                stem = safe_filename(Path(f).name.removesuffix(".h5"))
                name, i = stem, 1
                while name in used:
                    i += 1
                    name = f"{stem}-{i}"
                used.add(name)
                cfg = configs[m]
                jobs.append(
                    _Job(
                        patient.patient_id,
                        m,
                        str(Path(f).resolve()),
                        f"{m}/{safe_filename(patient.patient_id)}/{name}.pt",
                        cfg,
                        cfg.fingerprint(),
                    )
                )
    return jobs


def _drop_odd_widths(
    jobs: list[_Job], modalities: Sequence[str], failures: _Failures
) -> list[_Job]:
    """The jobs whose file is readable and has its modality's embedding width.

    The width of each modality is the one most files have; others are bad files.
    """
    widths: dict[int, int] = {}
    for idx, job in enumerate(jobs):
        try:
            widths[idx] = embedding_width(job.source)
        except RadiopathInputError as exc:
            failures.add_job(job, exc.reason)
    for m in modalities:
        counts = Counter(w for idx, w in widths.items() if jobs[idx].modality == m)
        if not counts:
            continue
        majority = max(sorted(counts), key=lambda w: counts[w])
        for idx, w in list(widths.items()):
            if jobs[idx].modality == m and w != majority:
                failures.add_job(
                    jobs[idx],
                    f"embedding width {w} differs from the {majority} of the other "
                    f"{counts[majority]} {m} file(s) (one modality, one encoder)",
                )
                del widths[idx]
    return [job for idx, job in enumerate(jobs) if idx in widths]


def _run_jobs(
    jobs: list[_Job], out: Path, ex: Executor, progress: bool, failures: _Failures
) -> dict[int, dict]:
    """Build the graphs not already up to date on ``ex``: ``{job index: manifest counts}``."""
    results: dict[int, dict] = {}
    todo = []
    for idx, job in enumerate(jobs):
        done = _up_to_date(job, out)
        if done is not None:
            results[idx] = done
        else:
            todo.append(idx)
    if results:
        log.info("%d graph(s) already built with the same configuration; skipped", len(results))

    with tqdm(total=len(todo), desc="graphs", unit="file", disable=not progress) as bar:
        units = [(jobs[idx], str(out)) for idx in todo]
        for done in ex.map_unordered(_build_one, units):
            idx = todo[done.index]
            try:
                results[idx] = done.result()
            except WriteError:
                raise  # the output folder, not the input: stop, nothing is skipped
            except (RadiopathInputError, OSError) as exc:
                failures.add_job(jobs[idx], getattr(exc, "reason", str(exc)))
            bar.update()
    return results


def load_graph_manifest(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``<out_dir>/manifest.csv``; adds a column ``path`` (absolute graph path)."""
    out = Path(out_dir)
    path = out / "manifest.csv"
    if not path.exists():
        raise RadiopathInputError(
            "no graph manifest here; build graphs first (radiopath graphs)", path=path
        )
    manifest = pd.read_csv(path, dtype={"patient_id": str, "graph": str, "source": str})
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise RadiopathInputError(f"manifest lacks columns {missing}", path=path, field=missing[0])
    root = out.resolve()
    manifest["path"] = [str(root / g) for g in manifest["graph"]]
    manifest.attrs["root"] = str(root)
    return manifest


def patient_graphs(
    manifest: pd.DataFrame | str | os.PathLike, patient_id: str, modality: str
) -> list[Data]:
    """All graphs of one patient and modality, in cohort (file) order.

    Parameters
    ----------
    manifest
        A manifest from :func:`load_graph_manifest` / :func:`build_cohort_graphs`, or the
        graph folder.
    patient_id, modality
        Which graphs; an empty list when the patient has none of that modality.
    """
    if not isinstance(manifest, pd.DataFrame):
        manifest = load_graph_manifest(manifest)
    rows = manifest[
        (manifest["patient_id"].astype(str) == str(patient_id)) & (manifest["modality"] == modality)
    ]
    if "path" in rows.columns:
        paths = list(rows["path"])
    else:
        root = manifest.attrs.get("root")
        if root is None:
            raise RadiopathInputError(
                "manifest has neither a 'path' column nor its folder in .attrs['root']; "
                "load it with load_graph_manifest",
                field="graph",
            )
        paths = [str(Path(root) / g) for g in rows["graph"]]
    return [load_graph(p) for p in paths]
