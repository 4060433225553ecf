"""Input projection on principal components fitted on the training fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from radiopath.errors import RadiopathInputError
from radiopath.models import MultimodalSurvivalModel
from radiopath.training.config import resolve_training_config
from radiopath.training.data import PatientRecord, principal_components


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


@pytest.mark.parametrize(
    "pca, field",
    [
        ({"components": -1}, "pca.components"),
        ({"components": 2.5}, "pca.components"),
        ({"components": "all"}, "pca.components"),
        ({"whiten": "yes"}, "pca.whiten"),
        ({"component": 4}, "pca.component"),
    ],
)
def test_bad_pca_settings_are_named(pca, field):
    with pytest.raises(RadiopathInputError, match=field.replace(".", r"\.")):
        resolve_training_config({"pca": pca})
