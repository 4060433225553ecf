"""Patient graphs for training: merging several slides, loading, caching and batching.

A patient may have several graphs of one modality (several slides or scans). They are merged
into one graph per patient and modality as a *disjoint union* (no edges between them), with
``assignment`` re-indexed so every patch of every source file still points at its node, and
``patch_source`` telling which file each patch came from; importance maps can then be written
back to each file's patches.

Graphs come from a folder written by :func:`radiopath.graph.build_cohort_graphs` (loaded
lazily, optionally cached in memory), from graphs built in memory by
:func:`radiopath.graph.build_graph`, or from a mapping ``{(patient_id, modality): [Data, ...]}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Batch, Data
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.io import Cohort, load_patient_bags
from radiopath.models.multimodal import CLINICAL, FeatureBatch, ModalityBatch, PatientBatch

log = logging.getLogger(__name__)

GraphSource = Callable[[str, str], list[Data]]


def merge_graphs(graphs: Sequence[Data]) -> Data:
    """Disjoint union of one patient's graphs of one modality.

    Keeps ``x``, ``edge_index``, ``assignment`` (offset by the nodes before it),
    ``patch_count``, ``patch_coords`` and ``pos`` where present, and adds ``patch_source`` ``[n_patches]``
    (index of the source graph of each patch) and ``sources`` (the graphs' ``source``
    attributes, usually the embedding files).
    """
    if len(graphs) == 0:
        raise ValueError("no graph to merge")
    xs, edges, assignment, coords, pos, patch_source, sources = [], [], [], [], [], [], []
    counts = []
    offset = 0
    for i, g in enumerate(graphs):
        n = int(g.x.size(0))
        xs.append(g.x)
        edges.append(g.edge_index + offset)
        if getattr(g, "assignment", None) is not None:
            assignment.append(g.assignment.long() + offset)
            patch_source.append(torch.full((g.assignment.numel(),), i, dtype=torch.long))
        if getattr(g, "patch_count", None) is not None:
            counts.append(g.patch_count.long())
        if getattr(g, "patch_coords", None) is not None:
            coords.append(torch.as_tensor(g.patch_coords))
        if getattr(g, "pos", None) is not None:
            pos.append(torch.as_tensor(g.pos))
        sources.append(str(getattr(g, "source", "") or f"graph{i}"))
        offset += n
    merged = Data(x=torch.cat(xs).float(), edge_index=torch.cat(edges, 1).long())
    if len(assignment) == len(graphs):
        merged.assignment = torch.cat(assignment)
        merged.patch_source = torch.cat(patch_source)
    if len(counts) == len(graphs):
        merged.patch_count = torch.cat(counts)
    if len(coords) == len(graphs):
        merged.patch_coords = torch.cat(coords)
    if len(pos) == len(graphs):
        merged.pos = torch.cat(pos)
    merged.sources = sources
    merged.modality = getattr(graphs[0], "modality", None)
    return merged


def is_symmetric(edge_index: torch.Tensor, n: int) -> bool:
    """Whether the adjacency matrix of ``edge_index`` (duplicates counted) is symmetric:
    every edge ``(i, j)`` has its reverse ``(j, i)`` as often, i.e. the sorted keys
    ``i n + j`` equal the sorted keys ``j n + i``. The encoder's sparse product relies on it
    (:func:`~radiopath.models.propagation.symmetric_spmm`). Two sorts, where
    :func:`torch_geometric.utils.is_undirected` also coalesces the edges: cheap enough to
    check every graph as it is loaded."""
    row, col = edge_index[0].long(), edge_index[1].long()
    return torch.equal(torch.sort(row * n + col).values, torch.sort(col * n + row).values)


def manifest_source(graphs_dir: str | os.PathLike) -> tuple[GraphSource, set[tuple[str, str]]]:
    """Graphs from a folder written by :func:`radiopath.graph.build_cohort_graphs`."""
    from radiopath.graph import load_graph_manifest, patient_graphs

    manifest = load_graph_manifest(graphs_dir)
    available = {(str(p), str(m)) for p, m in zip(manifest["patient_id"], manifest["modality"])}

    def load(patient_id: str, modality: str) -> list[Data]:
        return list(patient_graphs(manifest, patient_id, modality))

    return load, available


def mapping_source(graphs: Mapping) -> tuple[GraphSource, set[tuple[str, str]]]:
    """Graphs from a mapping ``{(patient_id, modality): Data or [Data, ...]}``."""
    store = {}
    for (pid, m), value in graphs.items():
        store[(str(pid), str(m))] = [value] if isinstance(value, Data) else list(value)

    def load(patient_id: str, modality: str) -> list[Data]:
        return store[(patient_id, modality)]

    return load, set(store)


def build_in_memory(
    cohort: Cohort,
    modalities: Sequence[str],
    preset=None,
    *,
    strict: bool = False,
    progress: bool = True,
) -> dict[tuple[str, str], list[Data]]:
    """Build every patient's graphs in memory with :func:`radiopath.graph.build_graph`.

    ``preset``: None for each modality's default, or what
    :func:`radiopath.graph.resolve_cohort_presets` accepts (a name, a list, ``{modality: preset}``).

    Convenient in a notebook; for large cohorts write them once with ``radiopath graphs``.
    A file that fails is reported and skipped unless ``strict``.
    """
    from radiopath.graph import build_graph, resolve_cohort_presets

    configs = resolve_cohort_presets(preset, list(modalities))
    out: dict[tuple[str, str], list[Data]] = {}
    todo = [(p, m) for p in cohort.patients for m in modalities if p.files.get(m)]
    for patient, m in tqdm(todo, desc="graphs", unit="bag", disable=not progress):
        try:
            bags = load_patient_bags(patient, m)
            out[(patient.patient_id, m)] = [build_graph(bag, configs[m]) for bag in bags]
        except RadiopathInputError as exc:
            if strict:
                raise
            log.warning("skipped: %s", exc)
    return out


@dataclass
class PatientRecord:
    """One patient as the training loop sees it."""

    patient_id: str
    time: float
    event: int
    modalities: tuple[str, ...]


class GraphStore:
    """Merged graphs per (patient, modality), loaded on demand and optionally cached.

    Parameters
    ----------
    load
        ``load(patient_id, modality) -> [Data, ...]``.
    cache
        Keep merged graphs in memory after the first load.
    """

    def __init__(self, load: GraphSource, cache: bool = True) -> None:
        self._load = load
        self.cache = cache
        self._cache: dict[tuple[str, str], Data] = {}

    def get(self, patient_id: str, modality: str) -> Data:
        key = (patient_id, modality)
        if key in self._cache:
            return self._cache[key]
        try:
            graphs = self._load(patient_id, modality)
        except RadiopathInputError as exc:
            raise RadiopathInputError(
                exc.reason, path=exc.path, patient_id=patient_id, field=exc.field or modality
            ) from exc
        if not graphs:
            raise RadiopathInputError("no graph found", patient_id=patient_id, field=modality)
        merged = merge_graphs(graphs)
        if not is_symmetric(merged.edge_index, merged.x.size(0)):
            raise RadiopathInputError(
                "graph is directed (an edge without its reverse); the encoder's convolutions "
                "need undirected graphs, as radiopath graphs writes them",
                patient_id=patient_id,
                field=modality,
            )
        if self.cache:
            self._cache[key] = merged
        return merged

    def feature_width(self, patient_id: str, modality: str) -> int:
        return int(self.get(patient_id, modality).x.size(1))


class ClinicalStore:
    """A graph store with the fold's encoded clinical vectors beside it.

    ``clinical`` maps each patient with clinical data to its ``[F]`` float tensor (encoded by
    a :class:`~radiopath.clinical.preprocess.ClinicalPreprocessor` fitted on the fold's
    training patients); graphs come from ``store``.
    """

    def __init__(self, store, clinical: Mapping[str, torch.Tensor]) -> None:
        self.store = store
        self.clinical = dict(clinical)

    @property
    def mapped(self) -> bool:
        return getattr(self.store, "mapped", False)

    def get(self, patient_id: str, modality: str) -> Data:
        return self.store.get(patient_id, modality)

    def feature_width(self, patient_id: str, modality: str) -> int:
        return self.store.feature_width(patient_id, modality)


class MappedGraphStore:
    """A fold's view of a :class:`GraphStore` whose node features went through the
    model's fixed input map once (:meth:`MultimodalSurvivalModel.map_input`).

    Only the features, edges and patch counts are kept, cached on first use; batches
    collated from it are ``mapped``, so the encoder skips the map at every step. Worth it
    when the map narrows the features (input components): the cache then holds at most
    half the raw features' memory, and the encoder's first product shrinks as much.
    """

    mapped = True

    def __init__(self, store: GraphStore, model) -> None:
        self.store = store
        self.model = model
        self.clinical = getattr(store, "clinical", None)
        self._cache: dict[tuple[str, str], Data] = {}

    def get(self, patient_id: str, modality: str) -> Data:
        key = (patient_id, modality)
        if key not in self._cache:
            g = self.store.get(patient_id, modality)
            counts = getattr(g, "patch_count", None)
            device = self.model.head.weight.device
            x = self.model.map_input(
                modality, g.x.to(device), None if counts is None else counts.to(device)
            )
            mapped = Data(x=x.cpu(), edge_index=g.edge_index, num_nodes=g.x.size(0))
            if counts is not None:
                mapped.patch_count = counts
            self._cache[key] = mapped
        return self._cache[key]


def batch_graphs(graphs: Sequence[Data]) -> Batch:
    """Disjoint union of ``graphs`` as a PyG :class:`~torch_geometric.data.Batch` with ``x``,
    ``edge_index``, ``batch``, ``ptr`` and ``patch_count`` (float; ones where a graph has none).

    What :meth:`Batch.from_data_list` gives for these attributes (the tests compare them),
    without its generic per-attribute collation, which cost about as much as the
    training step it fed.
    """
    sizes = torch.tensor([g.x.size(0) for g in graphs], dtype=torch.long)
    ptr = torch.zeros(len(graphs) + 1, dtype=torch.long)
    torch.cumsum(sizes, 0, out=ptr[1:])
    counts = [getattr(g, "patch_count", None) for g in graphs]
    out = Batch(
        x=torch.cat([g.x for g in graphs]),
        edge_index=torch.cat([g.edge_index + ptr[i] for i, g in enumerate(graphs)], 1),
        # patches behind each node: the weight of a node in its bag's mean
        patch_count=torch.cat(
            [torch.ones(g.x.size(0)) if c is None else c.float() for g, c in zip(graphs, counts)]
        ),
        batch=torch.repeat_interleave(torch.arange(len(graphs)), sizes),
        ptr=ptr,
    )
    out._num_graphs = len(graphs)
    return out


def collate(
    records: Sequence[PatientRecord],
    store: GraphStore | MappedGraphStore,
    modalities: Sequence[str],
) -> PatientBatch:
    """A :class:`~radiopath.models.PatientBatch` of ``records`` (graphs batched per modality
    with :func:`batch_graphs`; ``mapped`` when ``store`` is a :class:`MappedGraphStore`; the
    ``clinical`` modality's vectors from ``store.clinical``, see :class:`ClinicalStore`)."""
    per_modality: dict[str, ModalityBatch | FeatureBatch] = {}
    for m in modalities:
        rows = [row for row, rec in enumerate(records) if m in rec.modalities]
        if rows and m == CLINICAL:
            table = getattr(store, "clinical", None)
            if table is None:
                raise RadiopathInputError(
                    "the model reads clinical data but the graph store holds none", field=m
                )
            per_modality[m] = FeatureBatch(
                torch.stack([table[records[row].patient_id] for row in rows]),
                torch.tensor(rows, dtype=torch.long),
            )
        elif rows:
            per_modality[m] = ModalityBatch(
                batch_graphs([store.get(records[row].patient_id, m) for row in rows]),
                torch.tensor(rows, dtype=torch.long),
                mapped=getattr(store, "mapped", False),
            )
    return PatientBatch(
        patient_id=[r.patient_id for r in records],
        modalities=per_modality,
        # float32: MPS has no float64; times equal in float64 stay equal, so ties survive.
        time=torch.tensor([r.time for r in records], dtype=torch.float32),
        event=torch.tensor([r.event for r in records], dtype=torch.long),
    )


def feature_statistics(
    records: Sequence[PatientRecord], store: GraphStore, modality: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of node features over ``records`` (training patients only)."""
    total, total_sq, count = None, None, 0
    for rec in records:
        if modality not in rec.modalities:
            continue
        x = store.get(rec.patient_id, modality).x.double()
        s, sq = x.sum(0), (x * x).sum(0)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += x.size(0)
    if count == 0:
        raise RadiopathInputError("no training patient has this modality", field=modality)
    mean = total / count
    var = (total_sq / count - mean * mean).clamp(min=0.0)
    std = torch.sqrt(var)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


def principal_components(
    records: Sequence[PatientRecord],
    store: GraphStore,
    modality: str,
    n_components: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    center: bool = True,
    whiten: bool = True,
) -> torch.Tensor:
    """Leading principal components ``[D, K]`` of the standardised node features of
    ``records`` (training patients only), for :meth:`MultimodalSurvivalModel.set_input_components`.

    With ``center``, the covariance is the *within-bag* one (each node read against its
    bag's patch-weighted mean, as the encoder reads it), so a patient-level offset shared by
    every patch does not take a component. With ``whiten``, each component is divided by
    its standard deviation, so the projected features have unit variance in every retained
    direction: a rare tissue whose shift is small beside the dominant tissue-type axes is
    then as visible to the encoder as they are. Signs are fixed (largest loading positive),
    so the same data give the same components.
    """
    scatter_sum, count = None, 0
    for rec in records:
        if modality not in rec.modalities:
            continue
        graph = store.get(rec.patient_id, modality)
        z = (graph.x.double() - mean.double()) / std.double()
        if center:
            weight = getattr(graph, "patch_count", None)
            weight = torch.ones(len(z), dtype=torch.float64) if weight is None else weight.double()
            z = z - (weight[:, None] * z).sum(0) / weight.sum()
        part = z.T @ z
        scatter_sum = part if scatter_sum is None else scatter_sum + part
        count += z.size(0)
    if count < 2:
        raise RadiopathInputError("too few training nodes to fit components", field=modality)
    values, vectors = torch.linalg.eigh(scatter_sum / (count - 1))
    order = torch.argsort(values, descending=True)[:n_components]
    values, vectors = values[order].clamp(min=1e-12), vectors[:, order]
    vectors = vectors * torch.sign(vectors[vectors.abs().argmax(0), torch.arange(vectors.size(1))])
    if whiten:
        vectors = vectors / values.sqrt()
    return vectors.float()


def patch_importance(
    graph: Data, node_weight: np.ndarray, extra: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Node weights written to every patch through ``assignment`` (one row per patch).

    Returns the columns of the importance CSV: ``x, y[, z]`` (file coordinates),
    ``importance`` and, when the patient has several files of this modality, ``source``.
    Patches are in file order, files in cohort order. ``extra`` per-node columns go to
    every patch of the node too, except ``contribution``, which is shared equally among
    the node's patches, so that a graph's patch contributions add up to its nodes'.
    """
    if getattr(graph, "assignment", None) is None or getattr(graph, "patch_coords", None) is None:
        raise RadiopathInputError(
            "graph has no patch 'assignment' / 'patch_coords'; cannot map importance to patches",
            field="assignment",
        )
    node_weight = np.asarray(node_weight, dtype=np.float64)
    assignment = graph.assignment.numpy()
    coords = np.asarray(graph.patch_coords)
    cols: dict[str, np.ndarray] = {}
    for axis, name in enumerate("xyz"[: coords.shape[1]]):
        cols[name] = coords[:, axis]
    cols["importance"] = node_weight[assignment]
    for name, values in (extra or {}).items():
        values = np.asarray(values, dtype=np.float64)[assignment]
        if name == "contribution":
            values = values / np.bincount(assignment, minlength=len(node_weight))[assignment]
        cols[name] = values
    if len(graph.sources) > 1:
        cols["source"] = np.asarray(
            [Path(graph.sources[i]).name for i in graph.patch_source.numpy()]
        )
    return cols
