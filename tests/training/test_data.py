"""Batching and graph stores of the training loop (the fast paths equal the plain ones), and
the input projection on principal components fitted on the training fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_undirected

from radiopath.errors import RadiopathInputError
from radiopath.models.multimodal import MultimodalSurvivalModel
from radiopath.training.config import resolve_training_config
from radiopath.training.data import (
    GraphStore,
    MappedGraphStore,
    PatientRecord,
    batch_graphs,
    collate,
    mapping_source,
    principal_components,
)


def undirected_graph(n: int, dim: int, offset: float, seed: int, counts: bool = True) -> Data:
    gen = torch.Generator().manual_seed(seed)
    edge_index = to_undirected(torch.randint(0, n, (2, 3 * n), generator=gen), num_nodes=n)
    graph = Data(x=torch.randn(n, dim, generator=gen) + offset, edge_index=edge_index)
    if counts:
        graph.patch_count = torch.randint(1, 6, (n,), generator=gen)
    return graph


@pytest.fixture
def cohort():
    graphs, records = {}, []
    for i in range(6):
        for j, m in enumerate(("wsi", "ct")):
            graphs[(f"p{i}", m)] = undirected_graph(30 + 7 * i, 24, offset=i, seed=10 * i + j)
        records.append(PatientRecord(f"p{i}", 1.0 + i, i % 2, ("wsi", "ct")))
    load, _ = mapping_source(graphs)
    return GraphStore(load), records


def test_batch_graphs_equals_pyg_collation():
    graphs = [undirected_graph(n, 3, 0.0, seed=n, counts=n != 5) for n in (4, 5, 2)]
    ours = batch_graphs(graphs)
    ones = [getattr(g, "patch_count", torch.ones(g.x.size(0))).float() for g in graphs]
    reference = Batch.from_data_list(
        [Data(x=g.x, edge_index=g.edge_index, patch_count=c) for g, c in zip(graphs, ones)]
    )
    for key in ("x", "edge_index", "batch", "ptr", "patch_count"):
        assert torch.equal(getattr(ours, key), getattr(reference, key)), key
    assert ours.num_graphs == 3 == ours.to("cpu").num_graphs


@pytest.mark.parametrize("center", [False, True, "median"])
def test_mapped_store_gives_the_same_model_outputs_as_raw_features(cohort, center):
    store, records = cohort
    model = MultimodalSurvivalModel(
        {"wsi": 24, "ct": 24},
        "sparra",
        hidden_channels=16,
        ratio=0.5,
        input_components=8,
        encoder_options={"center": center},
    )
    gen = torch.Generator().manual_seed(0)
    for m in model.modalities:
        model.set_feature_scaling(
            m, torch.randn(24, generator=gen), torch.rand(24, generator=gen) + 0.5
        )
        model.set_input_components(m, torch.randn(24, 8, generator=gen))
    mapped = MappedGraphStore(store, model)
    raw_batch, mapped_batch = (collate(records, s, model.modalities) for s in (store, mapped))
    assert mapped_batch.modalities["wsi"].mapped and not raw_batch.modalities["wsi"].mapped
    assert mapped_batch.modalities["ct"].graphs.x.shape[1] == 8
    for training in (False, True):
        model.train(training)
        torch.manual_seed(1)
        raw = model(raw_batch, node_weights=False)
        torch.manual_seed(1)
        fast = model(mapped_batch, node_weights=False)
        assert torch.allclose(raw.risk, fast.risk, atol=1e-5), training
        # SPARRA's reconstruction target is the mapped (and centred) input either way
        assert torch.allclose(raw.aux_loss, fast.aux_loss, atol=1e-5), training


def test_a_directed_graph_is_refused_naming_the_patient():
    graph = Data(x=torch.randn(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    load, _ = mapping_source({("p7", "ct"): graph})
    with pytest.raises(RadiopathInputError, match="directed") as info:
        GraphStore(load).get("p7", "ct")
    assert "p7" in str(info.value) and "ct" in str(info.value)


def test_is_symmetric_is_symmetry_of_the_adjacency_with_multiplicities():
    from radiopath.training.data import is_symmetric

    gen = torch.Generator().manual_seed(4)
    for trial in range(40):
        n = int(torch.randint(2, 12, (1,), generator=gen))
        edges = torch.randint(
            0, n, (2, int(torch.randint(1, 30, (1,), generator=gen))), generator=gen
        )
        if trial % 2:
            edges = to_undirected(edges, num_nodes=n)
        dense = torch.zeros(n, n).index_put_(
            tuple(edges), torch.ones(edges.size(1)), accumulate=True
        )
        assert is_symmetric(edges, n) == bool(torch.equal(dense, dense.T)), edges


# ------------------------------------------------- principal components of the training fold


class _Store:
    def __init__(self, graphs):
        self.graphs = graphs

    def get(self, patient_id, modality):
        return self.graphs[patient_id]


def _bags(seed=0, n_bags=40, dim=12, offset=5.0):
    """Bags whose nodes vary along ``rare`` (a shift on 10% of the nodes) and ``common``
    (noise of sd 0.5), with a per-bag offset of sd ``offset`` along ``shared``."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    shared, rare = basis[:, 0], basis[:, 1]
    graphs, records = {}, []
    for i in range(n_bags):
        n = int(rng.integers(40, 80))
        x = 0.5 * rng.normal(size=(n, dim))
        x += offset * rng.normal() * shared
        x[: n // 10] += 3.0 * rare
        counts = rng.integers(1, 5, size=n)
        graphs[f"P{i}"] = Data(
            x=torch.tensor(x, dtype=torch.float32), patch_count=torch.tensor(counts)
        )
        records.append(PatientRecord(f"P{i}", 1.0, 1, ("wsi",)))
    return _Store(graphs), records, shared, rare


def test_within_bag_components_ignore_a_bag_level_offset_and_find_the_rare_tissue():
    store, records, shared, rare = _bags()
    mean, std = torch.zeros(12), torch.ones(12)
    comp = principal_components(records, store, "wsi", 2, mean, std, center=True, whiten=False)
    first = comp[:, 0].double().numpy()
    assert abs(first @ rare) > 0.95  # the rare shift leads the within-bag covariance
    assert abs(first @ shared) < 0.2
    pooled = principal_components(records, store, "wsi", 1, mean, std, center=False, whiten=False)
    assert abs(pooled[:, 0].double().numpy() @ shared) > 0.95  # without centring: the offset


def test_whitened_components_give_unit_within_bag_variance_and_fixed_signs():
    store, records, *_ = _bags(seed=1)
    mean, std = torch.randn(12), torch.rand(12) + 0.5
    comp = principal_components(records, store, "wsi", 4, mean, std, center=True, whiten=True)
    z = []
    for rec in records:
        g = store.get(rec.patient_id, "wsi")
        x = (g.x.double() - mean.double()) / std.double()
        w = g.patch_count.double()
        z.append((x - (w[:, None] * x).sum(0) / w.sum()) @ comp.double())
    z = torch.cat(z)
    cov = z.T @ z / (len(z) - 1)
    torch.testing.assert_close(cov, torch.eye(4, dtype=torch.float64), atol=1e-4, rtol=1e-4)
    again = principal_components(records, store, "wsi", 4, mean, std, center=True, whiten=True)
    assert torch.equal(comp, again)
    assert (comp[comp.abs().argmax(0), torch.arange(4)] > 0).all()


def test_model_with_components_equals_the_model_fed_projected_features():
    torch.manual_seed(0)
    model = MultimodalSurvivalModel({"wsi": 6}, "sparra", hidden_channels=8, input_components=3)
    assert model.encoders["wsi"].in_channels == 3
    wide = MultimodalSurvivalModel({"wsi": 6, "ct": 40}, "mean", input_components=16)
    assert wide.encoders["wsi"].in_channels == 3  # at most half the width
    assert wide.encoders["ct"].in_channels == 16
    widths = {"wsi": 6, "ct": 128, "a": 16, "b": 64, "c": 1024}
    auto = MultimodalSurvivalModel(widths, "mean", input_components="auto")
    got = {m: auto.encoders[m].in_channels for m in widths}
    assert got == {"wsi": 3, "ct": 32, "a": 8, "b": 16, "c": 256}
    assert resolve_training_config({}).pca.components == "auto"
    with pytest.raises(ValueError, match="do not fit"):
        model.set_input_components("wsi", torch.randn(6, 4))
    comp = torch.randn(6, 3)
    model.set_input_components("wsi", comp)
    mean, std, got = model.input_map("wsi")
    assert torch.equal(got, comp)
    state = model.state_dict()
    assert "feature_components_wsi" in state
    clone = MultimodalSurvivalModel({"wsi": 6}, "sparra", hidden_channels=8, input_components=3)
    clone.load_state_dict(state)
    assert torch.equal(clone.input_map("wsi")[2], comp)
