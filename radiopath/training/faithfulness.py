"""Is an importance map faithful to the model? Deletion checks on a trained fold.

A map is faithful when the patches it ranks first are the ones the model's prediction
rests on: deleting them should move the predicted risk more than deleting as many
patches at random (the *deletion* test of saliency evaluation; Samek et al. 2017,
Petsiuk et al. 2018). In a graph, the patches behind one node share its importance, so
whole nodes are deleted, taken in order of importance until they hold ``fraction`` of the
bag's patches; the random reference deletes random nodes holding the same fraction.

    >>> model, train, test, store = load_fold_model("runs/sparra", 0)
    >>> table = deletion_check(model, test, store)
    >>> (table.delta_top > table.delta_random).mean()
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from radiopath.errors import RadiopathInputError
from radiopath.training.data import GraphStore, PatientRecord
from radiopath.training.loop import predict


class _EditedStore:
    """A :class:`GraphStore` stand-in that serves edited graphs for some (patient, modality)."""

    def __init__(self, store: GraphStore, edited: dict) -> None:
        self._store, self._edited = store, edited
        self.clinical = getattr(store, "clinical", None)  # a clinical model's vectors

    def get(self, patient_id: str, modality: str) -> Data:
        key = (patient_id, modality)
        return self._edited[key] if key in self._edited else self._store.get(*key)


def _nodes_holding(order: np.ndarray, counts: np.ndarray, fraction: float) -> np.ndarray:
    """The first nodes of ``order`` whose patches reach ``fraction`` of all patches."""
    need = fraction * counts.sum()
    cumulative = np.cumsum(counts[order])
    return order[: int(np.searchsorted(cumulative, need)) + 1]


def _without(graph: Data, drop: np.ndarray) -> Data:
    keep = torch.ones(graph.num_nodes, dtype=torch.bool)
    keep[torch.as_tensor(drop, dtype=torch.long)] = False
    edge_index, _ = subgraph(keep, graph.edge_index, relabel_nodes=True, num_nodes=graph.num_nodes)
    counts = getattr(graph, "patch_count", None)
    counts = torch.ones(graph.num_nodes) if counts is None else counts
    return Data(x=graph.x[keep], edge_index=edge_index, patch_count=counts[keep])


def deletion_check(
    model,
    records: Sequence[PatientRecord],
    store: GraphStore,
    *,
    fraction: float = 0.1,
    n_random: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> pd.DataFrame:
    """Risk change when the most important ``fraction`` of each bag's patches are deleted,
    against deleting the same fraction at random.

    Each modality of each patient is edited alone. Returns one row per (patient,
    modality): ``delta_top`` = |risk after deleting the top nodes - risk|, ``delta_random``
    = the mean of the same over ``n_random`` random deletions.
    """
    if not 0.0 < fraction < 1.0:
        raise RadiopathInputError(f"must be in (0, 1), got {fraction}", field="fraction")
    device = torch.device(device)
    records = list(records)
    risk, _, nodes = predict(model, records, store, device, batch_size, node_weights=True)
    base = dict(zip((r.patient_id for r in records), risk))
    rng = np.random.default_rng(seed)
    edits: list[tuple[PatientRecord, str, str, Data]] = []
    for rec in records:
        # graph modalities only: the clinical vector has no nodes to delete
        for m in (m for m in rec.modalities if (rec.patient_id, m) in nodes):
            graph = store.get(rec.patient_id, m)
            counts = getattr(graph, "patch_count", None)
            counts = np.ones(graph.num_nodes) if counts is None else counts.numpy().astype(float)
            weight = nodes[(rec.patient_id, m)].importance
            # ties (e.g. nodes dropped by pooling) broken at random, not by node order
            top = np.lexsort((rng.random(len(weight)), -weight))
            variants = {"top": _nodes_holding(top, counts, fraction)}
            for i in range(n_random):
                variants[f"random{i}"] = _nodes_holding(
                    rng.permutation(len(weight)), counts, fraction
                )
            for name, drop in variants.items():
                if len(drop) >= graph.num_nodes:
                    continue
                edits.append((rec, m, name, _without(graph, drop)))
    rows: dict[tuple[str, str], dict] = {}
    for rec, m, name, edited in edits:
        pid = rec.patient_id
        new, _, _ = predict(model, [rec], _EditedStore(store, {(pid, m): edited}), device, 1)
        row = rows.setdefault((pid, m), {"patient_id": pid, "modality": m, "random": []})
        change = abs(float(new[0]) - float(base[pid]))
        if name == "top":
            row["delta_top"] = change
        else:
            row["random"].append(change)
    table = pd.DataFrame(
        [
            {
                "patient_id": r["patient_id"],
                "modality": r["modality"],
                "delta_top": r.get("delta_top", np.nan),
                "delta_random": float(np.mean(r["random"])) if r["random"] else np.nan,
            }
            for r in rows.values()
        ]
    )
    return table


def load_fold_model(run_dir: str | os.PathLike, fold: int, device: str = "cpu"):
    """A finished fold of a training run, ready to predict: ``(model, train, test, store)``.

    Reads the run's ``run.json`` (configuration, cohort, graphs) and ``folds.csv`` and
    loads ``checkpoints/fold_<fold>.pt`` (nothing is trained).
    """
    import json

    from radiopath.io import read_cohort
    from radiopath.models.multimodal import CLINICAL
    from radiopath.runtime import resolve_device
    from radiopath.training.config import DEFAULT_CONFIG, resolve_training_config
    from radiopath.training.cv import _training_inputs, clinical_table
    from radiopath.training.fold_unit import fold_clinical
    from radiopath.training.folds import read_folds
    from radiopath.training.loop import fit_fold
    from radiopath.training.state import fold_file_stem

    run_dir = Path(run_dir)
    record = json.loads((run_dir / "run.json").read_text())["config"]
    # the run's training configuration: resolving a resolved one gives it back
    cfg = resolve_training_config({k: v for k, v in record.items() if k in DEFAULT_CONFIG})
    ckpt = run_dir / "checkpoints" / f"{fold_file_stem(fold)}.pt"
    if not ckpt.exists():
        raise RadiopathInputError("no checkpoint of this fold", path=ckpt)
    cohort = read_cohort(record["cohort"], strict=cfg.strict)
    if record["graphs"] == "memory":
        raise RadiopathInputError(
            "the run's graphs were built in memory; rebuild them to a folder to reload a fold",
            path=run_dir / "run.json",
            field="graphs",
        )
    graphs = Path(record["graphs"]).parent
    clinical = clinical_table(cohort, cfg) if CLINICAL in cfg.modalities else None
    # the run's patients, graphs and input widths, found as training found them
    inputs = _training_inputs(cohort, graphs, cfg, False, clinical)
    records, store, in_channels = inputs.records, inputs.store, dict(inputs.in_channels)
    folds = read_folds(run_dir / "folds.csv")  # with repeats, fold ids are r * K + k
    in_fold = set(folds.loc[folds["fold"] == fold, "patient_id"])
    train = [r for r in records if r.patient_id not in in_fold]
    test = [r for r in records if r.patient_id in in_fold]
    if clinical is not None:  # the fold's encoding, fitted on its training patients again
        store, in_channels[CLINICAL] = fold_clinical(store, clinical, train, cfg)
    model = fit_fold(
        fold,
        train,
        test,
        store,
        cfg,
        in_channels=in_channels,
        missing_indicator=bool(record["missing_indicator_used"]),
        out_dir=run_dir,
        device=resolve_device(device),
        resume=True,
        progress=False,
    )
    return model, train, test, store
