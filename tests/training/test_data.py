"""Batching and graph stores of the training loop: the fast paths equal the plain ones."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_undirected

from radiopath.errors import RadiopathInputError
from radiopath.models.multimodal import MultimodalSurvivalModel
from radiopath.training.data import (
    GraphStore,
    MappedGraphStore,
    PatientRecord,
    batch_graphs,
    collate,
    mapping_source,
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
