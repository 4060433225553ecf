"""The multimodal model: batching, permutation invariance, importance tracing, gradients,
missing modalities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from model_graphs import random_graph
from torch_geometric.data import Data

from radiopath.models import GraphEncoder, MultimodalSurvivalModel
from radiopath.training.data import (
    GraphStore,
    PatientRecord,
    collate,
    merge_graphs,
    patch_importance,
)

AGGREGATORS = ("mean", "abmil", "sparra")


def make_store(graphs: dict) -> GraphStore:
    return GraphStore(lambda pid, m: graphs[(pid, m)])


def cohort_graphs(n_patients=5, dims=(6, 4), seed=0, missing=()):
    graphs, records = {}, []
    for i in range(n_patients):
        pid = f"P{i}"
        mods = []
        for m, dim, ndim in (("wsi", dims[0], 2), ("ct", dims[1], 3)):
            if (pid, m) in missing:
                continue
            graphs[(pid, m)] = [
                random_graph(20 + 7 * i, dim, seed * 100 + i + (50 if m == "ct" else 0), ndim)
            ]
            mods.append(m)
        records.append(PatientRecord(pid, float(10 + i), i % 2, tuple(mods)))
    return graphs, records


def model_for(aggregator, **kw):
    torch.manual_seed(0)
    return MultimodalSurvivalModel(
        {"wsi": 6, "ct": 4}, aggregator, hidden_channels=16, ratio={"wsi": 0.5, "ct": 0.7}, **kw
    )


@pytest.mark.parametrize("aggregator", AGGREGATORS)
@pytest.mark.parametrize("use_graph", [True, False])
def test_batch_equals_one_by_one(aggregator, use_graph):
    graphs, records = cohort_graphs()
    store = make_store(graphs)
    model = model_for(aggregator, use_graph=use_graph).eval()
    with torch.no_grad():
        together = model(collate(records, store, model.modalities))
        for i, rec in enumerate(records):
            alone = model(collate([rec], store, model.modalities))
            assert torch.allclose(together.embedding[i], alone.embedding[0], atol=1e-5)
            assert torch.allclose(together.risk[i], alone.risk[0], atol=1e-5)


def permute_graph(g: Data, perm: torch.Tensor) -> Data:
    """Renumber nodes: new node j is old node perm[j]."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    out = g.clone()
    out.x = g.x[perm]
    out.pos = g.pos[perm]
    out.edge_index = inverse[g.edge_index]
    out.assignment = inverse[g.assignment]
    return out


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_node_permutation_leaves_embedding_and_patch_importance_unchanged(aggregator):
    graphs, records = cohort_graphs(n_patients=2)
    model = model_for(aggregator).eval()
    g = graphs[("P1", "wsi")][0]
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(3))
    shuffled = dict(graphs)
    shuffled[("P1", "wsi")] = [permute_graph(g, perm)]
    with torch.no_grad():
        a = model(collate(records, make_store(graphs), model.modalities))
        b = model(collate(records, make_store(shuffled), model.modalities))
    assert torch.allclose(a.embedding, b.embedding, atol=1e-5)
    # The importance of every patch is the same whatever the node numbering (P0 comes first).
    n0 = graphs[("P0", "wsi")][0].num_nodes
    wa = a.node_weight["wsi"][n0:].numpy()
    wb = b.node_weight["wsi"][n0:].numpy()
    ia = patch_importance(merge_graphs([g]), wa)["importance"]
    ib = patch_importance(merge_graphs([permute_graph(g, perm)]), wb)["importance"]
    np.testing.assert_allclose(ia, ib, atol=1e-6)


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_weights_sum_to_one_and_reach_every_patch(aggregator):
    graphs, records = cohort_graphs(n_patients=3)
    store = make_store(graphs)
    model = model_for(aggregator).eval()
    with torch.no_grad():
        out = model(collate(records, store, model.modalities))
    batch = collate(records, store, model.modalities)
    for m, ratio in (("wsi", 0.5), ("ct", 0.7)):
        ptr = batch.modalities[m].graphs.ptr
        w = out.node_weight[m]
        for i, rec in enumerate(records):
            wi = w[ptr[i] : ptr[i + 1]].numpy()
            n = wi.size
            assert wi.sum() == pytest.approx(1.0, abs=1e-5)
            survivors = math.ceil(ratio * math.ceil(ratio * n))
            if aggregator == "mean":
                np.testing.assert_allclose(wi[wi > 0], 1.0 / survivors, rtol=1e-5)
            assert (wi > 0).sum() == survivors  # dropped nodes are 0, kept ones positive
            graph = store.get(rec.patient_id, m)
            cols = patch_importance(graph, wi)
            assert len(cols["importance"]) == graph.assignment.numel()
            np.testing.assert_array_equal(cols["importance"], wi[graph.assignment.numpy()])
            np.testing.assert_array_equal(cols["x"], graph.patch_coords[:, 0].numpy())


def test_merged_slides_map_importance_to_each_file():
    a, b = random_graph(12, 6, 1), random_graph(9, 6, 2)
    merged = merge_graphs([a, b])
    assert merged.num_nodes == 21
    assert int(merged.edge_index.min()) == 0 and int(merged.edge_index.max()) == 20
    # No edge crosses between the two slides.
    src, dst = merged.edge_index
    assert not bool(((src < 12) != (dst < 12)).any())
    weights = np.arange(21, dtype=float)
    cols = patch_importance(merged, weights)
    n_a = a.assignment.numel()
    np.testing.assert_array_equal(cols["importance"][:n_a], weights[a.assignment.numpy()])
    np.testing.assert_array_equal(cols["importance"][n_a:], weights[12 + b.assignment.numpy()])
    assert list(np.unique(cols["source"])) == ["graph1.h5", "graph2.h5"]


@pytest.mark.parametrize("aggregator", AGGREGATORS)
@pytest.mark.parametrize("conv", ["gcn", "gin"])
def test_every_parameter_receives_a_gradient(aggregator, conv):
    graphs, records = cohort_graphs(n_patients=6, missing={("P2", "ct"), ("P4", "wsi")})
    model = model_for(aggregator, conv=conv, dropout=0.0).train()
    out = model(collate(records, make_store(graphs), model.modalities))
    time = torch.tensor([r.time for r in records])
    event = torch.tensor([1, 1, 0, 1, 0, 1])
    loss = model.survival_loss(out, time, event) + out.aux_loss
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


def test_missing_modality_uses_learned_embedding_not_zeros():
    graphs, records = cohort_graphs(n_patients=4, missing={("P1", "wsi")})
    store = make_store(graphs)
    model = model_for("sparra", missing_indicator=True).eval()
    with torch.no_grad():
        out = model(collate(records, store, model.modalities))
    h = model.hidden_channels
    emb = out.embedding[1]
    assert torch.equal(emb[:h], model.missing["wsi"].detach())
    assert float(emb[:h].abs().sum()) > 0
    assert emb[-2:].tolist() == [0.0, 1.0]  # presence columns: wsi missing, ct present
    assert out.present[1].tolist() == [False, True]
    assert out.embedding.shape[1] == model.embedding_dim == 2 * h + 2
    # Another patient's WSI cannot move this patient's risk ...
    changed = dict(graphs)
    changed[("P0", "wsi")] = [random_graph(30, 6, 999)]
    with torch.no_grad():
        other = model(collate(records, make_store(changed), model.modalities))
    assert float(other.risk[1]) == pytest.approx(float(out.risk[1]), abs=1e-6)
    assert float(other.risk[0]) != pytest.approx(float(out.risk[0]), abs=1e-6)
    # ... but the learned missing embedding does.
    with torch.no_grad():
        model.missing["wsi"].add_(1.0)
        moved = model(collate(records, store, model.modalities))
    assert float(moved.risk[1]) != pytest.approx(float(out.risk[1]), abs=1e-6)
    assert float(moved.risk[0]) == pytest.approx(float(out.risk[0]), abs=1e-6)


def test_single_modality_drops_a_branch():
    graphs, records = cohort_graphs(n_patients=3)
    model = MultimodalSurvivalModel({"ct": 4}, "abmil", hidden_channels=8)
    assert list(model.encoders) == ["ct"] and model.embedding_dim == 8
    with torch.no_grad():
        out = model.eval()(collate(records, make_store(graphs), model.modalities))
    assert out.embedding.shape == (3, 8) and set(out.node_weight) == {"ct"}


def test_discrete_time_head():
    graphs, records = cohort_graphs(n_patients=4)
    model = model_for("mean", head="discrete", n_bins=3)
    model.bin_edges.copy_(torch.tensor([0.0, 11.0, 12.0, float("inf")], dtype=torch.float64))
    out = model(collate(records, make_store(graphs), model.modalities))
    assert out.logits.shape == (4, 3)
    loss = model.survival_loss(
        out, torch.tensor([r.time for r in records]), torch.tensor([1, 0, 1, 1])
    )
    loss.backward()
    assert torch.isfinite(loss)


def test_encoder_keeps_input_nodes_it_reports():
    g = random_graph(40, 5, 7)
    enc = GraphEncoder(5, 8, ratio=0.5).eval()
    with torch.no_grad():
        out = enc(g.x, g.edge_index, torch.zeros(40, dtype=torch.long), 1)
    assert out.x.shape[0] == 10 and out.node_map.unique().numel() == 10
    assert torch.equal(out.target, g.x[out.node_map])
    assert int(out.edge_index.max()) < 10 if out.edge_index.numel() else True


def test_pooled_dropout_leaves_top_k_selection_unchanged_in_training():
    # dropout_position="pooled": the selection scores see the clean features, so the kept
    # nodes in training mode are the evaluation-mode ones; with "input" dropout they differ.
    g = random_graph(60, 5, 3)
    batch = torch.zeros(60, dtype=torch.long)
    kept = {}
    for position in ("pooled", "input"):
        torch.manual_seed(0)
        enc = GraphEncoder(5, 16, ratio=0.5, dropout=0.5, dropout_position=position)
        with torch.no_grad():
            evaluated = enc.eval()(g.x, g.edge_index, batch, 1)
            trained = enc.train()(g.x, g.edge_index, batch, 1)
        kept[position] = torch.equal(evaluated.node_map.sort()[0], trained.node_map.sort()[0])
        if position == "pooled":
            assert (trained.x == 0).any()  # dropout acts on the surviving nodes
    assert kept == {"pooled": True, "input": False}


@pytest.mark.parametrize("importance", ["selection", "receptive_field"])
def test_node_weights_off_changes_nothing_else(importance):
    graphs, records = cohort_graphs(n_patients=4)
    store = make_store(graphs)
    model = model_for("sparra", encoder_options={"importance": importance}).eval()
    batch = collate(records, store, model.modalities)
    with torch.no_grad():
        full, light = model(batch), model(batch, node_weights=False)
    assert set(full.node_weight) == {"wsi", "ct"} and light.node_weight == {}
    torch.testing.assert_close(full.risk, light.risk)
    torch.testing.assert_close(full.embedding, light.embedding)
    for m in ("wsi", "ct"):  # receptive-field weights still sum to 1 per graph
        ptr = batch.modalities[m].graphs.ptr
        sums = [full.node_weight[m][ptr[i] : ptr[i + 1]].sum().item() for i in range(4)]
        np.testing.assert_allclose(sums, 1.0, atol=1e-5)


@pytest.mark.parametrize("head", ["cox", "binary", "discrete"])
def test_unimodal_heads_loss_is_each_modality_scored_alone(head):
    """Each modality's auxiliary head scores the patients that have it, with the head's own
    loss; the mean over modalities is the unimodal loss."""
    graphs, records = cohort_graphs(n_patients=6, missing=[("P1", "ct"), ("P4", "ct")])
    store = make_store(graphs)
    model = model_for("sparra", head=head, unimodal_heads=True).train()
    if head == "binary":
        model.set_horizon(12.5, 2.0)
    if head == "discrete":
        model.bin_edges.copy_(torch.tensor([0.0, 11.0, 12.0, 13.0, 100.0]))
    batch = collate(records, store, model.modalities)
    out = model(batch, node_weights=False)
    assert set(out.unimodal) == {"wsi", "ct"}
    rows_ct = out.unimodal["ct"][1].tolist()
    assert rows_ct == [0, 2, 3, 5]
    expected = []
    for pred, rows in out.unimodal.values():
        fake = type(out)(pred.squeeze(-1), out.embedding[rows], pred, out.aux_loss)
        expected.append(model.survival_loss(fake, batch.time[rows], batch.event[rows]))
    got = model.unimodal_loss(out, batch.time, batch.event)
    assert torch.allclose(got, torch.stack(expected).mean())
    got.backward()  # the heads and the branches below them receive a gradient
    assert model.unimodal["ct"][1].weight.grad.abs().sum() > 0
    assert model.encoders["ct"].project[0].weight.grad.abs().sum() > 0


def test_unimodal_heads_never_change_predictions():
    graphs, records = cohort_graphs()
    store = make_store(graphs)
    model = model_for("abmil", unimodal_heads=True).eval()
    batch = collate(records, store, model.modalities)
    with torch.no_grad():
        before = model(batch).risk.clone()
        for p in model.unimodal.parameters():
            p.add_(torch.randn_like(p))
        after = model(batch)
    assert after.unimodal == {}
    assert torch.equal(before, after.risk)
