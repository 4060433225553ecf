"""One fold of cross-validated training as a unit of work, runnable on any executor.

:func:`train_cross_validated` decides which folds still need training (a fold whose
``done.json`` matches its configuration and whose exports are intact is never submitted) and
hands each of the others to its executor as :func:`run_fold` with one shared
:class:`FoldContext`. The unit trains the fold (resuming its own checkpoint), writes its
exports and marks itself in the run's ledger (:func:`~radiopath.runkit.run_ledger`, its own
``checkpoints/fold_<k>.done.json``, written atomically), and returns the fold's test C-index.

In this process the context carries the caller's :class:`GraphStore` (its cache included);
a worker in another process builds its own from the graph folder's manifest (reading the
graph files from their paths) or from the in-memory graphs shipped once with the context,
and keeps it for the next fold it is given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from radiopath.models.multimodal import CLINICAL
from radiopath.runkit import file_fingerprint, run_ledger
from radiopath.runtime import resolve_device
from radiopath.training.config import TrainingConfig
from radiopath.training.data import (
    ClinicalStore,
    GraphStore,
    PatientRecord,
    manifest_source,
    mapping_source,
)
from radiopath.training.loop import fit_fold


@dataclass
class FoldContext:
    """What every fold of one training run shares.

    Attributes
    ----------
    graphs
        The graph folder (with ``manifest.csv``) or ``{(patient_id, modality): graphs}``.
    cache
        Whether a worker's store keeps the graphs it loaded in memory.
    device
        The device folds run on in this process (in a worker's copy: the requested one).
    requested_device
        The device as the caller asked for it (``"auto"``: each worker resolves it on its
        own devices, a GPU when it was given one).
    store
        The caller's store, used when the folds run in this process; None in workers.
    clinical
        The cohort's clinical columns (indexed by patient id) when the model reads the
        ``clinical`` modality: each fold encodes them with a preprocessor fitted on its
        training patients (:func:`fold_clinical`).
    """

    cfg: TrainingConfig
    in_channels: dict[str, int]
    missing_indicator: bool
    out_dir: Path
    device: torch.device | str
    requested_device: str
    resume: bool
    progress: bool
    graphs: str | os.PathLike | Mapping
    cache: bool
    store: GraphStore | None = None
    clinical: pd.DataFrame | None = None

    def for_workers(self) -> FoldContext:
        """The context sent to other processes: no store, no per-epoch progress bars, the
        device left for each worker to resolve."""
        return replace(self, store=None, progress=False, device=self.requested_device)


@dataclass
class FoldTask:
    """One fold: its patients, the files it exports (for its ledger) and whether it traces
    importance maps (the first repeat only)."""

    fold: int
    train: Sequence[PatientRecord]
    test: Sequence[PatientRecord]
    exports: list[str]
    write_importance: bool


_worker_store: dict[tuple, GraphStore] = {}  # the last graph folder's store of this process


def _store(ctx: FoldContext) -> GraphStore:
    if ctx.store is not None:
        return ctx.store
    if isinstance(ctx.graphs, Mapping):
        return GraphStore(mapping_source(ctx.graphs)[0], cache=True)
    manifest = Path(ctx.graphs) / "manifest.csv"
    # a rebuilt graph folder rewrites its manifest: a new store
    key = (str(manifest.resolve()), file_fingerprint(manifest), ctx.cache)
    if key not in _worker_store:
        _worker_store.clear()
        _worker_store[key] = GraphStore(manifest_source(ctx.graphs)[0], cache=ctx.cache)
    return _worker_store[key]


def fold_clinical(
    store, frame: pd.DataFrame, train: Sequence[PatientRecord], cfg: TrainingConfig
) -> tuple[ClinicalStore, int]:
    """``store`` with the fold's encoded clinical vectors, and their width: the
    preprocessor (imputation, ordinal codes, one-hot, scaling) is fitted on the fold's
    training patients that have clinical data, then encodes every patient."""
    from radiopath.clinical.preprocess import ClinicalPreprocessor

    train_ids = [r.patient_id for r in train if CLINICAL in r.modalities]
    pre = ClinicalPreprocessor(scaling=cfg.clinical.scaling)
    pre.fit(frame.loc[train_ids])
    x = torch.as_tensor(pre.transform(frame), dtype=torch.float32)
    return ClinicalStore(store, dict(zip(frame.index.astype(str), x))), int(x.shape[1])


def _fold_inputs(task: FoldTask, ctx: FoldContext):
    """``(store, in_channels, device)`` of a fold in this process."""
    store = _store(ctx)
    in_channels = dict(ctx.in_channels)
    if ctx.clinical is not None:
        store, in_channels[CLINICAL] = fold_clinical(store, ctx.clinical, task.train, ctx.cfg)
    return store, in_channels, resolve_device(ctx.device)


def _fit(task: FoldTask, ctx: FoldContext, store, in_channels, device, cfg, member=None):
    return fit_fold(
        task.fold,
        task.train,
        task.test,
        store,
        cfg,
        in_channels=in_channels,
        missing_indicator=ctx.missing_indicator,
        out_dir=ctx.out_dir,
        device=device,
        resume=ctx.resume,
        progress=ctx.progress,
        member=member,
    )


def train_member(task: FoldTask, member: int, ctx: FoldContext) -> None:
    """Train (or resume) one member of a fold's ensemble into its checkpoint, nothing more:
    a parallel executor runs a fold's members side by side, then :func:`run_fold` reads
    them from their finished checkpoints (the files are those of one process training the
    members in turn)."""
    from radiopath.training.ensemble import member_config

    store, in_channels, device = _fold_inputs(task, ctx)
    _fit(task, ctx, store, in_channels, device, member_config(ctx.cfg, member), member)


def run_fold(task: FoldTask, ctx: FoldContext) -> float:
    """Train one fold, write its exports and ``checkpoints/fold_<k>.done.json``; return its
    test C-index."""
    # cv imports this module; its export step is looked up when a fold runs
    from radiopath.training.export import export_fold, fold_unit_config

    store, in_channels, device = _fold_inputs(task, ctx)
    model = _fit(task, ctx, store, in_channels, device, ctx.cfg)
    c_index = export_fold(
        model,
        task.fold,
        task.train,
        task.test,
        store,
        ctx.cfg,
        ctx.out_dir,
        device,
        task.write_importance,
    )
    run_ledger(ctx.out_dir).mark(  # its own file: parallel folds never share one
        f"fold_{task.fold}",
        fold_unit_config(ctx.cfg),
        task.exports,  # checked on resume: a later truncation is detected
        fold=task.fold,
        test_c_index=c_index,
        n_train=len(task.train),
        n_test=len(task.test),
        selected_epoch=getattr(model, "selected_epoch", None),
        inner_validation_c_index=getattr(model, "inner_validation_c_index", None),
    )
    return c_index
