"""Modality fusion (concat / mean / attention), the clinical branch and the binary head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_graphs import random_graph

from radiopath.models import MultimodalSurvivalModel
from radiopath.models.fusion import ClinicalBranch, ModalityFusion
from radiopath.models.losses import binary_horizon_loss, horizon_labels
from radiopath.training.data import ClinicalStore, GraphStore, PatientRecord, collate

FUSIONS = ("concat", "mean", "attention")


def three_modality_batch(n=6, seed=0, missing=(("P1", "ct"), ("P2", "wsi"), ("P3", "clinical"))):
    """Graphs of two modalities and clinical vectors for ``n`` patients, some missing."""
    graphs, records, clinical = {}, [], {}
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        pid = f"P{i}"
        mods = []
        for m, dim, ndim in (("wsi", 6, 2), ("ct", 4, 3)):
            if (pid, m) not in missing:
                graphs[(pid, m)] = [
                    random_graph(15 + 5 * i, dim, seed * 100 + i + 7 * len(m), ndim)
                ]
                mods.append(m)
        if (pid, "clinical") not in missing:
            clinical[pid] = torch.rand(5, generator=gen)
            mods.append("clinical")
        records.append(PatientRecord(pid, float(5 + 3 * i), int(i % 3 != 0), tuple(mods)))
    store = ClinicalStore(GraphStore(lambda pid, m: graphs[(pid, m)]), clinical)
    return store, records


def trained_model(fusion, head="cox", aggregator="sparra"):
    """A model whose batch normalisation holds running statistics and whose head is not
    at its initial values, in evaluation mode."""
    torch.manual_seed(1)
    model = MultimodalSurvivalModel(
        {"wsi": 6, "ct": 4, "clinical": 5},
        aggregator,
        hidden_channels=8,
        ratio=0.5,
        fusion=fusion,
        head=head,
        missing_indicator=True,
        clinical_hidden=(16, 8),
    )
    if head == "binary":
        model.set_horizon(12.0, 2.0)
    store, records = three_modality_batch()
    batch = collate(records, store, model.modalities)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(batch, node_weights=False)
        model.head.weight.normal_()
    return model.eval(), batch


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("head", ["cox", "binary"])
def test_contributions_and_offset_add_up_to_the_risk(fusion, head):
    model, batch = trained_model(fusion, head)
    with torch.no_grad():
        out = model(batch)
    total = out.risk_offset.clone().double()
    for m, contribution in out.node_contribution.items():
        mb = batch.modalities[m]
        patient = mb.patient_index[mb.graphs.batch]
        total.index_add_(0, patient, contribution.double())
    torch.testing.assert_close(total, out.risk.double(), atol=1e-4, rtol=1e-4)
    # the offset is not the residual: a node's contribution is not zero everywhere
    assert any(c.abs().max() > 1e-3 for c in out.node_contribution.values())


@pytest.mark.parametrize("fusion", ["mean", "attention"])
def test_weights_are_spread_over_the_modalities_a_patient_has(fusion):
    model, batch = trained_model(fusion)
    with torch.no_grad():
        out = model(batch, node_weights=False)
    w = out.fusion_weight
    torch.testing.assert_close(w.sum(1), torch.ones(len(batch)))
    assert (w[~out.present] == 0).all()
    if fusion == "mean":
        expected = out.present.float() / out.present.sum(1, keepdim=True)
        torch.testing.assert_close(w, expected)
    else:
        assert w[out.present].min() > 0


def test_mean_fusion_is_the_mean_of_the_normalised_projections():
    model, batch = trained_model("mean")
    with torch.no_grad():
        out = model(batch, node_weights=False)
        # patient 0 has every modality: recompute its fused vector branch by branch
        single = collate([PatientRecord("P0", 5.0, 0, ("wsi", "ct", "clinical"))], *_store_of())
        vectors = []
        for m in ("wsi", "ct"):
            agg, _ = model.encode_modality(m, single.modalities[m], node_weights=False)
            vectors.append(agg.out)
        vectors.append(model.clinical(single.modalities["clinical"].x))
        z = [
            F.layer_norm(model.fusion.projections[i](v), (8,), eps=model.fusion.norm.eps)
            for i, v in enumerate(vectors)
        ]
        expected = torch.stack(z).mean(0)[0]
    torch.testing.assert_close(out.embedding[0, :8], expected, atol=1e-5, rtol=1e-5)


def _store_of():
    store, _ = three_modality_batch()
    return store, ["wsi", "ct", "clinical"]


def test_concat_layout_and_a_patient_without_clinical_data():
    model, batch = trained_model("concat")
    with torch.no_grad():
        out = model(batch, node_weights=False)
    # wsi (8) + ct (8) + clinical (8) + 3 presence columns
    assert out.embedding.shape == (6, 27)
    p3 = batch.patient_id.index("P3")
    torch.testing.assert_close(out.embedding[p3, 16:24], model.missing["clinical"].detach())
    assert out.present[p3].tolist() == [True, True, False]


def test_unknown_fusion_and_empty_clinical_branch_are_refused():
    with pytest.raises(ValueError, match="fusion"):
        ModalityFusion([4, 4], "sum")
    with pytest.raises(ValueError, match="at least one input"):
        ClinicalBranch(0)


def test_binary_horizon_loss_is_the_weighted_cross_entropy_of_known_statuses():
    time = torch.tensor([1.0, 2.0, 8.0, 3.0, 12.0, 4.0])
    event = torch.tensor([1, 0, 1, 1, 0, 0])
    logit = torch.tensor([0.3, -1.0, 0.5, 2.0, -0.2, 0.1])
    label, usable = horizon_labels(time, event, 5.0)
    # events by 5: patients 0 and 3; followed past 5: patients 2 (event at 8) and 4;
    # censored before 5 (1 and 5): unknown status, left out
    assert label.tolist() == [True, False, False, True, False, False]
    assert usable.tolist() == [True, False, True, True, True, False]
    loss = binary_horizon_loss(logit, time, event, 5.0, pos_weight=3.0)
    manual = 0.0
    for i in (0, 2, 3, 4):
        p = torch.sigmoid(logit[i])
        manual += -(3.0 * torch.log(p) if label[i] else torch.log(1 - p))
    torch.testing.assert_close(loss, manual / 4)
    nobody = binary_horizon_loss(logit[[1, 5]], time[[1, 5]], event[[1, 5]], 5.0)
    assert float(nobody) == 0.0 and nobody.requires_grad is False
