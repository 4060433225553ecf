"""Cross-validated training of one aggregator, and everything a run directory holds.

``<out>/``

* ``run.json`` -- configuration (with ``aggregator`` and ``modalities``), seed, versions;
* ``folds.csv`` -- ``patient_id, repeat, fold`` (reusable by other runs:
  ``folds=<out>/folds.csv``); with ``repeats=R`` the folds of repeat r are numbered
  ``r*K .. r*K+K-1`` and every file below is written for each of the R x K folds;
* ``logs/fold_<k>.csv`` -- per-epoch loss parts and train / validation C-index;
* ``checkpoints/fold_<k>.pt`` -- resumable state; ``fold_<k>.done.json`` once exported;
  with ``ensemble: K`` members 1 .. K-1 write ``logs/fold_<k>.member_<i>.csv`` and
  ``checkpoints/fold_<k>.member_<i>.pt`` (:mod:`radiopath.training.ensemble`);
* ``embeddings/fold_<k>.npz`` -- the fold model's patient vectors for its train *and* test
  patients, with its own risk (:func:`radiopath.io.write_fold_embeddings`; an ensemble's
  members' vectors side by side, its averaged standardised risk);
* ``risks.csv`` -- ``aggregator, modalities, repeat, fold, patient_id, time, event, risk`` of
  the test patients (``modalities`` joined by ``+``);
* ``importance/<aggregator>/<patient_id>.<modality>.csv`` -- ``x, y[, z], importance`` for
  every patch of the patient's files, in file order (plus ``source`` when a patient has
  several files of the modality), from the fold in which the patient was a test patient
  (of repeat 0 when the folds are repeated).
  SPARRA: the normalised inverse precision of the surviving nodes, written back through
  both top-k permutations (dropped nodes 0); ABMIL: the attention; mean: uniform. Each patch
  carries its node's weight.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radiopath.config import RunRecord
from radiopath.errors import RadiopathInputError
from radiopath.executors import ExecutorArg, borrowed
from radiopath.io import (
    Cohort,
    FoldEmbeddings,
    read_cohort,
    read_fold_embeddings,
)
from radiopath.models.multimodal import CLINICAL
from radiopath.runtime import resolve_device
from radiopath.training.config import TrainingConfig, resolve_training_config
from radiopath.training.data import (
    GraphStore,
    PatientRecord,
    build_in_memory,
    manifest_source,
    mapping_source,
)
from radiopath.training.export import (
    finish_run,
    finished_fold,
    fold_exports,
    merge_fusion_weights,
    merge_risk_offsets,
)
from radiopath.training.fold_unit import FoldContext, FoldTask, run_fold, train_member
from radiopath.training.folds import (
    check_folds,
    fold_repeats,
    make_folds,
    read_folds,
    write_folds,
)
from radiopath.training.late import train_late_fusion

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """What :func:`train_cross_validated` produced.

    Attributes
    ----------
    out_dir
        The run directory.
    config
        The resolved configuration (:class:`~radiopath.training.config.TrainingConfig`).
    folds
        ``patient_id, repeat, fold``.
    risks
        Test-fold risks (the rows of ``risks.csv``).
    fold_c_index
        Test C-index of the aggregator's own Cox head, per fold.
    """

    out_dir: Path
    config: TrainingConfig
    folds: pd.DataFrame
    risks: pd.DataFrame
    fold_c_index: dict[int, float]

    @property
    def mean_c_index(self) -> float:
        return float(np.nanmean(list(self.fold_c_index.values())))

    def embeddings(self, fold: int) -> FoldEmbeddings:
        return read_fold_embeddings(self.out_dir / "embeddings" / f"fold_{fold}.npz")

    def importance_path(self, patient_id: str, modality: str) -> Path:
        return self.out_dir / "importance" / self.config.aggregator / f"{patient_id}.{modality}.csv"


def _graph_source(graphs_dir, cohort: Cohort, cfg: TrainingConfig, progress: bool):
    """``load, available, source, graphs``: ``graphs`` is the graph folder or the in-memory
    mapping (what a worker in another process builds its own store from)."""
    graph_mods = [m for m in cfg.modalities if m != CLINICAL]
    if not graph_mods:  # a clinical-only model reads no graph
        return mapping_source({})[0], set(), "memory", {}
    if graphs_dir is None:
        built = build_in_memory(
            cohort, graph_mods, cfg.graph_preset, strict=cfg.strict, progress=progress
        )
        load, available = mapping_source(built)
        return load, available, "memory", built
    if isinstance(graphs_dir, Mapping):
        load, available = mapping_source(graphs_dir)
        return load, available, "memory", graphs_dir
    graphs_dir = Path(graphs_dir)
    if not graphs_dir.is_dir():
        raise RadiopathInputError("graphs folder does not exist", path=graphs_dir)
    load, available = manifest_source(graphs_dir)
    return load, available, graphs_dir / "manifest.csv", graphs_dir


def clinical_table(cohort: Cohort, cfg: TrainingConfig) -> pd.DataFrame:
    """The cohort's clinical columns the ``clinical`` modality reads (``clinical.columns``,
    default all), indexed by patient id; refused by name when there are none."""
    frame = cohort.clinical_frame()
    wanted = cfg.clinical.columns
    if wanted is not None:
        unknown = [c for c in wanted if c not in frame.columns]
        if unknown:
            raise RadiopathInputError(
                f"unknown clinical column(s) {unknown}; the cohort has {list(frame.columns)}",
                path=cohort.path,
                field="clinical.columns",
            )
        frame = frame[list(wanted)]
    if frame.shape[1] == 0:
        raise RadiopathInputError(
            "the clinical modality was asked for but the cohort has no clinical column",
            path=cohort.path,
            field="clinical",
        )
    return frame


def _want_cache(cfg: TrainingConfig, store: GraphStore, records: Sequence[PatientRecord]) -> bool:
    """``cache_graphs``: true / false, or "auto": cache when the graphs fit in ``cache_limit_gb``
    (estimated from the first graph's size)."""
    if cfg.cache_graphs != "auto":
        return bool(cfg.cache_graphs)
    graph_mod = next(m for m in records[0].modalities if m != CLINICAL)
    first = store.get(records[0].patient_id, graph_mod)
    estimate = first.x.element_size() * first.x.numel() * sum(len(r.modalities) for r in records)
    keep = estimate < float(cfg.cache_limit_gb) * 2**30
    log.info(
        "graph cache %s (graphs need about %.2f GB)", "on" if keep else "off", estimate / 2**30
    )
    return keep


def _has_clinical(patient, columns: Sequence[str]) -> bool:
    return any(not pd.isna(patient.clinical.get(c)) for c in columns)


def _patient_records(
    cohort: Cohort,
    available: set,
    modalities: Sequence[str],
    source,
    strict: bool,
    clinical_columns: Sequence[str] = (),
):
    available = set(available) | {
        (p.patient_id, CLINICAL)
        for p in cohort.patients
        if CLINICAL in modalities and _has_clinical(p, clinical_columns)
    }
    present_anywhere = {m for (_, m) in available}
    for m in modalities:
        if m not in present_anywhere:
            raise RadiopathInputError(
                f"modality {m!r} was asked for but no graph of it exists "
                f"(graphs found for: {sorted(present_anywhere) or 'none'})",
                path=source,
                field=m,
            )
    records = []
    for p in cohort.patients:
        mods = []
        for m in modalities:
            if (p.patient_id, m) in available:
                mods.append(m)
            elif p.files.get(m):
                msg = "has an embedding file but no graph; treated as missing this modality"
                if strict:
                    raise RadiopathInputError(msg, path=source, patient_id=p.patient_id, field=m)
                log.warning("patient '%s', field '%s': %s", p.patient_id, m, msg)
        if not mods:
            msg = f"has none of the requested modalities {list(modalities)}; left out"
            if strict:
                raise RadiopathInputError(
                    msg, path=source, patient_id=p.patient_id, field="modalities"
                )
            log.warning("patient '%s': %s", p.patient_id, msg)
            continue
        records.append(PatientRecord(p.patient_id, p.time, p.event, tuple(mods)))
    if len(records) < 4:
        raise RadiopathInputError(
            f"only {len(records)} patient(s) have graphs of {list(modalities)}; need at least 4",
            path=source,
            field="modalities",
        )
    return records


def _resolve_folds(
    folds, records, cfg, out_dir: Path, resume: bool, repeats: int = 1
) -> pd.DataFrame:
    ids = [r.patient_id for r in records]
    existing = out_dir / "folds.csv"
    if folds is None:
        if resume and existing.exists():
            table = check_folds(read_folds(existing), ids, existing)
            if table["repeat"].nunique() != repeats:
                raise RadiopathInputError(
                    f"this run was started with {table['repeat'].nunique()} repeat(s), not "
                    f"{repeats}; use a new output folder or resume=False",
                    path=existing,
                    field="repeats",
                )
        else:
            table = make_folds(
                ids, [r.event for r in records], cfg.folds, cfg.seed, repeats=repeats
            )
    elif isinstance(folds, pd.DataFrame):
        table = check_folds(folds, ids)
    else:
        table = check_folds(read_folds(folds), ids, folds)
        if resume and existing.exists() and Path(folds).resolve() != existing.resolve():
            before = check_folds(read_folds(existing), ids, existing)
            if not before.equals(table):
                raise RadiopathInputError(
                    "differs from the folds this run was started with; use a new output folder "
                    "or resume=False",
                    path=folds,
                )
    write_folds(table, existing)
    return table


def train_cross_validated(
    cohort_or_csv: Cohort | str | os.PathLike,
    graphs_dir: str | os.PathLike | Mapping | None,
    *,
    aggregator: str,
    modalities: Sequence[str] | str,
    out_dir: str | os.PathLike,
    config: Mapping | TrainingConfig | None = None,
    folds: str | os.PathLike | pd.DataFrame | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    repeats: int = 1,
    executor: ExecutorArg = None,
) -> TrainingResult:
    """Train one aggregator under outer k-fold cross-validation and export its outputs.

    For each fold a fresh model (graph encoder and aggregator per modality, fused, a linear
    head) is trained on the other folds, then exports the embeddings of all patients, the
    test risks and the test patients' importance maps (see the module docstring for the
    files); with ``fusion: late`` one model per modality, combined
    (:mod:`radiopath.training.late`). Finished folds are skipped when ``resume``; an
    interrupted fold continues from its last checkpoint.

    Parameters
    ----------
    cohort_or_csv
        A :class:`~radiopath.io.Cohort` or the cohort CSV.
    graphs_dir
        Folder written by ``radiopath graphs`` (with ``manifest.csv``); ``None`` to build the
        graphs in memory with each modality's default preset (the ``graph_preset`` key);
        or a mapping ``{(patient_id, modality): Data or [Data, ...]}``.
    aggregator
        ``"sparra"``, ``"abmil"`` or ``"mean"``.
    modalities
        Modalities to use, e.g. ``["wsi", "ct"]`` or ``"wsi,ct,clinical"`` (``clinical``:
        the cohort's clinical columns, read by an MLP branch).
    out_dir
        The run directory.
    config
        Overrides of the defaults and the preset
        (:class:`~radiopath.training.config.TrainingConfig`, every key in
        ``docs/config-training.md``; e.g. ``{"epochs": 30, "ratio": {"ct": 0.7}, "sparra":
        {"kl": "reference"}}``, ``{"preset": "reference"}``), or a built
        :class:`~radiopath.training.config.TrainingConfig`.
    folds
        A folds file / frame (``patient_id, [repeat,] fold``) to reuse; by default
        stratified folds are made (``n_folds``, ``seed``, ``repeats``) and written to
        ``<out>/folds.csv``.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    resume
        Continue an earlier run in ``out_dir``; False retrains every fold.
    progress
        Show progress bars.
    repeats
        Repeated cross-validation: R stratified splits with seeds ``seed .. seed+R-1``
        (when no ``folds`` are given); every one of the R x K folds is trained.
    executor
        Where the folds run, one fold per unit (:mod:`radiopath.executors`): default this
        process, one fold after the other; ``"ray"`` or ``{"name": "ray", ...}`` for Ray
        workers. Each fold is seeded by itself, so the files are the same either way.
    """
    cfg, cohort, clinical = _resolve_run(cohort_or_csv, aggregator, modalities, config, device)
    args = (cohort, graphs_dir, cfg, Path(out_dir), folds, device, resume, progress, repeats)
    if cfg.fusion == "late":
        return train_late_fusion(*args, executor, clinical)
    run = _prepare_joint(*args, clinical)
    return train_prepared([run], executor)[0]


def _resolve_run(cohort_or_csv, aggregator, modalities, config, device):
    """``(cfg, cohort, clinical table or None)`` of a run, its inputs checked."""
    cfg = resolve_training_config(config, aggregator=aggregator, modalities=modalities)
    resolve_device(device)  # a bad device is refused before any work
    cohort = (
        cohort_or_csv
        if isinstance(cohort_or_csv, Cohort)
        else read_cohort(cohort_or_csv, strict=cfg.strict)
    )
    cohort.require_modalities(list(cfg.modalities))
    clinical = clinical_table(cohort, cfg) if CLINICAL in cfg.modalities else None
    return cfg, cohort, clinical


def prepare_training(
    cohort_or_csv: Cohort | str | os.PathLike,
    graphs_dir: str | os.PathLike | Mapping | None,
    *,
    aggregator: str,
    modalities: Sequence[str] | str,
    out_dir: str | os.PathLike,
    config: Mapping | TrainingConfig | None = None,
    folds: str | os.PathLike | pd.DataFrame | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    repeats: int = 1,
) -> PreparedRun:
    """A run of :func:`train_cross_validated` made ready but not trained: its patients,
    graphs and folds (``<out>/folds.csv`` is written). :func:`train_prepared` trains several
    such runs with their folds as units of one executor map, so a pool's workers stay busy
    across runs (5 folds on 2 workers leave one idle for a fifth of the time; 15 folds of
    three runs much less). The arguments are :func:`train_cross_validated`'s; late fusion
    (``fusion: late``) trains one model per modality and is not prepared this way."""
    cfg, cohort, clinical = _resolve_run(cohort_or_csv, aggregator, modalities, config, device)
    if cfg.fusion == "late":
        raise ValueError("late fusion runs train through train_cross_validated")
    return _prepare_joint(
        cohort, graphs_dir, cfg, Path(out_dir), folds, device, resume, progress, repeats, clinical
    )


@dataclass
class PreparedRun:
    """A joint-fusion run ready to train (:func:`prepare_training`)."""

    cfg: TrainingConfig
    out: Path
    table: pd.DataFrame
    record: dict  # run.json's configuration
    tasks: list[FoldTask]
    context: FoldContext
    fold_c: dict[int, float]  # the test C-index of each fold finished so far


def _prepare_joint(
    cohort, graphs_dir, cfg, out: Path, folds, device, resume, progress, repeats, clinical
) -> PreparedRun:
    """One model over every modality of ``cfg``: the run's inputs, folds and pending folds."""
    dev = resolve_device(device)
    inputs = _training_inputs(cohort, graphs_dir, cfg, progress, clinical)
    out.mkdir(parents=True, exist_ok=True)
    table = _resolve_folds(folds, inputs.records, cfg, out, resume, repeats)
    record_cfg = {
        **cfg.to_dict(),
        "cohort": str(cohort.path),
        "graphs": str(inputs.source),
        "device": str(dev),
        "missing_indicator_used": inputs.indicator,
        "n_patients": len(inputs.records),
    }
    fold_c: dict[int, float] = {}
    tasks = _pending_folds(inputs.records, table, cfg, out, resume, fold_c)
    context = FoldContext(
        cfg,
        inputs.in_channels,
        inputs.indicator,
        out,
        dev,
        str(device),
        resume,
        progress,
        inputs.graphs,
        inputs.cache,
        inputs.store,
        clinical,
    )
    return PreparedRun(cfg, out, table, record_cfg, tasks, context, fold_c)


def train_prepared(
    runs: Sequence[PreparedRun], executor: ExecutorArg = None
) -> list[TrainingResult]:
    """Train prepared runs (:func:`prepare_training`), every pending fold of every run a
    unit of one executor map (with ``ensemble`` on a parallel executor, every member first),
    then finish each run: its merged tables, ``risks.csv`` and ``run.json``. The files are
    those of training each run on its own."""
    with ExitStack() as stack:
        records = [
            stack.enter_context(RunRecord(r.out, command="train", config=r.record, seed=r.cfg.seed))
            for r in runs
        ]
        _run_folds(runs, executor)
        results = [_finish(r, record) for r, record in zip(runs, records)]
    return results


def _finish(run: PreparedRun, record: RunRecord) -> TrainingResult:
    repeat_of = fold_repeats(run.table)
    fold_ids = sorted(repeat_of)
    fold_c = dict(sorted(run.fold_c.items()))
    first_repeat = min(repeat_of.values())
    merge_risk_offsets(
        run.out, run.cfg.aggregator, [k for k in fold_ids if repeat_of[k] == first_repeat]
    )
    merge_fusion_weights(run.out, fold_ids)
    risks = finish_run(record, run.out, fold_ids, run.cfg, repeat_of, fold_c)
    return TrainingResult(run.out, run.cfg, run.table, risks, fold_c)


@dataclass
class _TrainingInputs:
    """The patients a run trains on and where their graphs come from."""

    records: list[PatientRecord]
    store: GraphStore
    in_channels: dict[str, int]
    cache: bool
    indicator: bool
    graphs: object
    source: object


def _training_inputs(cohort, graphs_dir, cfg, progress, clinical) -> _TrainingInputs:
    """The patients with at least one requested modality, a store of their graphs, the
    input width of each graph modality, whether graphs stay cached and whether the model
    gets presence columns (``missing_indicator: auto``: when some patient lacks one)."""
    modalities = list(cfg.modalities)
    load, available, source, graphs = _graph_source(graphs_dir, cohort, cfg, progress)
    records = _patient_records(
        cohort,
        available,
        modalities,
        source,
        cfg.strict,
        () if clinical is None else list(clinical.columns),
    )
    store = GraphStore(load, cache=True)
    in_channels = {}
    for m in modalities:
        if m != CLINICAL:
            first = next(r for r in records if m in r.modalities)
            in_channels[m] = store.feature_width(first.patient_id, m)
    graph_records = [r for r in records if set(r.modalities) - {CLINICAL}]
    cache = (
        isinstance(graphs, Mapping) or not graph_records or _want_cache(cfg, store, graph_records)
    )
    store.cache = cache
    missing = any(len(r.modalities) < len(modalities) for r in records)
    indicator = missing if cfg.missing_indicator == "auto" else bool(cfg.missing_indicator)
    return _TrainingInputs(records, store, in_channels, cache, indicator, graphs, source)


def _pending_folds(records, table, cfg, out: Path, resume: bool, fold_c: dict) -> list[FoldTask]:
    """The folds still to train; a fold that finished with intact exports has its test
    C-index put in ``fold_c`` instead."""
    # each repeat covers the cohort: a fold's training patients are all the others
    in_fold = {int(k): set(ids) for k, ids in table.groupby("fold")["patient_id"]}
    repeat_of = fold_repeats(table)
    first_repeat = min(repeat_of.values())
    tasks = []
    for k in sorted(in_fold):
        train = [r for r in records if r.patient_id not in in_fold[k]]
        test = [r for r in records if r.patient_id in in_fold[k]]
        exports = fold_exports(k, cfg.aggregator, test, cfg.modalities)
        finished = finished_fold(out, k, cfg) if resume else None
        if finished is not None:
            fold_c[k] = finished
            continue
        tasks.append(FoldTask(k, train, test, exports, repeat_of[k] == first_repeat))
    return tasks


def _run_folds(runs: Sequence[PreparedRun], executor) -> None:
    """Train the runs' pending folds on the executor, one fold per unit, under one progress
    bar; each fold's test C-index goes to its run's ``fold_c``."""
    total = sum(len(r.fold_c) + len(r.tasks) for r in runs)
    label = "+".join(r.cfg.aggregator for r in runs)
    progress = any(r.context.progress for r in runs)
    bar = tqdm(
        total=total,
        initial=total - sum(len(r.tasks) for r in runs),
        desc=f"{label} folds",
        unit="fold",
        disable=not progress,
    )
    with borrowed(executor) as ex, bar:
        contexts = [r.context.for_workers() if ex.remote else r.context for r in runs]
        if ex.remote:
            _train_members(ex, runs, contexts, progress)
            # an ensemble's folds read their members from the checkpoints just written
            contexts = [replace(c, resume=True) if c.cfg.ensemble > 1 else c for c in contexts]
        # the contexts travel once, as the map's shared value (Ray: one object in its store)
        units = [(r, t, j) for j, r in enumerate(runs) for t in r.tasks]
        tasks = [(t, j) for _, t, j in units]
        for done in ex.map_unordered(_run_fold_of, tasks, shared={"contexts": contexts}):
            run, task, _ = units[done.index]
            run.fold_c[task.fold] = done.result()
            log.info(
                "%s fold %d: test C-index %.3f",
                run.cfg.aggregator,
                task.fold,
                run.fold_c[task.fold],
            )
            bar.update()


def _train_members(ex, runs, contexts, progress: bool) -> None:
    """Every member of every pending fold of an ensemble as its own unit, so a parallel
    executor keeps all its workers busy (5 folds of 3 members: 15 units, not 5); a member
    whose finished checkpoint is there (resume) is not submitted again."""
    from radiopath.training.ensemble import member_finished

    units = [
        (t, i, j)
        for j, (run, ctx) in enumerate(zip(runs, contexts))
        if run.cfg.ensemble > 1
        for t in run.tasks
        for i in range(int(run.cfg.ensemble))
        if not (ctx.resume and member_finished(ctx.out_dir, t.fold, i, ctx.cfg))
    ]
    if not units:
        return
    bar = tqdm(total=len(units), desc="ensemble members", unit="model", disable=not progress)
    with bar:
        for done in ex.map_unordered(_train_member_of, units, shared={"contexts": contexts}):
            done.result()
            bar.update()


def _run_fold_of(task: FoldTask, which: int, contexts: Sequence[FoldContext]) -> float:
    return run_fold(task, contexts[which])


def _train_member_of(task: FoldTask, member: int, which: int, contexts) -> None:
    train_member(task, member, contexts[which])
