"""Degenerate and bad inputs: a clear error or a documented degenerate graph."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from graph_helpers import brute_delaunay_edges, edge_set, grid_bag

from radiopath.errors import RadiopathInputError
from radiopath.graph import build_graph
from radiopath.io import EmbeddingBag

ALL_PRESETS = ["wsi-clustered", "wsi-patch-knn", "ct-clustered-3d", "ct-patch-knn"]


def _bag(coords, dim=4, seed=0, **kw):
    coords = np.asarray(coords)
    rng = np.random.default_rng(seed)
    modality = "wsi" if coords.shape[1] == 2 else "ct"
    return EmbeddingBag(
        features=rng.normal(size=(len(coords), dim)).astype(np.float32),
        coords=coords,
        modality=modality,
        patch_size=256 if modality == "wsi" else 8,
        path=kw.pop("path", None),
        **kw,
    )


def _coords_for(preset, n):
    width = 2 if preset.startswith("wsi") else 3
    return (np.arange(n * width).reshape(n, width) * 37) % 1000


def test_zero_patches_is_an_error_naming_the_file(tmp_path):
    bag = EmbeddingBag(
        features=np.zeros((0, 4), np.float32),
        coords=np.zeros((0, 2)),
        modality="wsi",
        path=tmp_path / "empty.h5",
    )
    with pytest.raises(RadiopathInputError, match="no patches") as info:
        build_graph(bag)
    assert "empty.h5" in str(info.value)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_one_patch_gives_one_node_without_edges(preset):
    g = build_graph(_bag(_coords_for(preset, 1)), preset)
    assert g.num_nodes == 1 and g.edge_index.shape == (2, 0)
    assert g.assignment.tolist() == [0] and g.patch_count.tolist() == [1]


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_two_patches(preset):
    coords = np.zeros((2, 2 if preset.startswith("wsi") else 3), dtype=np.int64)
    coords[1, 0] = 256 if preset.startswith("wsi") else 8
    bag = _bag(coords)
    g = build_graph(bag, preset)
    assert g.num_nodes in (1, 2) and g.assignment.numel() == 2
    if g.num_nodes == 2:
        assert edge_set(g.edge_index) == {(0, 1)}
    np.testing.assert_allclose(
        g.x.mean(0) if g.num_nodes == 1 else g.x,
        bag.features.mean(0) if g.num_nodes == 1 else bag.features,
        rtol=1e-6,
    )


@pytest.mark.parametrize("rule", ["delaunay", "knn"])
def test_collinear_patches_form_a_chain(rule):
    """Delaunay fails on collinear points; the graph joins them in order along the line."""
    t = np.random.default_rng(0).permutation(30)
    coords = np.stack([t * 256, t * 128], axis=1)  # a diagonal line, shuffled
    g = build_graph(_bag(coords), "wsi-patch-knn", edge_rule=rule, k=2)
    expected = {
        (min(i, j), max(i, j))
        for i, j in (
            (int(np.nonzero(t == s)[0][0]), int(np.nonzero(t == s + 1)[0][0])) for s in range(29)
        )
    }
    if rule == "delaunay":
        assert edge_set(g.edge_index) == expected
    else:
        assert expected <= edge_set(g.edge_index)


def test_collinear_clustered_graph_builds():
    coords = np.stack([np.arange(200) * 256, np.zeros(200, int)], axis=1)
    g = build_graph(_bag(coords), "wsi-clustered")
    assert 1 < g.num_nodes < 200
    # Nodes on a line: each interior node has exactly two neighbours (a chain).
    degree = torch.bincount(g.edge_index[0], minlength=g.num_nodes)
    assert degree.max() <= 2 and degree.sum() == 2 * (g.num_nodes - 1)


def test_coplanar_ct_patches_use_the_plane_triangulation():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, size=(20, 2))
    coords = np.column_stack([xy, np.full(20, 16.0)])  # one axial slice
    g = build_graph(_bag(coords, spacing=(1.0, 1.0, 1.0)), "ct-patch-knn", edge_rule="delaunay")
    assert edge_set(g.edge_index) == brute_delaunay_edges(xy)


def test_tilted_coplanar_ct_patches():
    rng = np.random.default_rng(2)
    uv = rng.uniform(0, 50, size=(15, 2))
    # A plane through the volume at an angle: x = u, y = v, z = u + v.
    coords = np.column_stack([uv[:, 0], uv[:, 1], uv.sum(1)])
    g = build_graph(_bag(coords, spacing=(1.0, 1.0, 1.0)), "ct-patch-knn", edge_rule="delaunay")
    # Delaunay is not affine-invariant: compare in isometric coordinates of the plane.
    basis, _ = np.linalg.qr(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    in_plane = coords @ basis
    assert edge_set(g.edge_index) == brute_delaunay_edges(in_plane)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_duplicate_coordinates_are_kept_and_warned(preset, caplog):
    width = 2 if preset.startswith("wsi") else 3
    base = grid_bag(side=4, modality="wsi" if width == 2 else "ct").coords
    coords = np.concatenate([base, base[:5]])  # five patches listed twice
    bag = _bag(coords, path="dups.h5")
    with caplog.at_level(logging.WARNING, logger="radiopath.graph"):
        g = build_graph(bag, preset)
    assert "5 of" in caplog.text and "dups.h5" in caplog.text
    assert g.assignment.numel() == len(coords)
    assert torch.equal(torch.bincount(g.assignment, minlength=g.num_nodes), g.patch_count)
    # No isolated nodes: every duplicate is joined to its twin (or merged with it).
    if g.num_nodes > 1:
        assert torch.unique(g.edge_index[0]).numel() == g.num_nodes


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_all_patches_at_one_position(preset):
    width = 2 if preset.startswith("wsi") else 3
    g = build_graph(_bag(np.zeros((6, width), int)), preset)
    assert g.assignment.numel() == 6 and g.num_nodes >= 1
    assert not (g.edge_index[0] == g.edge_index[1]).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_an_error(bad, tmp_path):
    bag = grid_bag(side=4, path=tmp_path / "slide.h5")
    bag.features[3, 1] = bad
    with pytest.raises(RadiopathInputError, match="NaN or inf") as info:
        build_graph(bag)
    msg = str(info.value)
    assert "slide.h5" in msg and "'features'" in msg and "[3]" in msg


def test_non_finite_coordinates_are_an_error():
    bag = grid_bag(side=4, modality="wsi")
    bag.coords = bag.coords.astype(float)
    bag.coords[2, 0] = np.nan
    with pytest.raises(RadiopathInputError, match="coords"):
        build_graph(bag)


@pytest.mark.parametrize("modality,width", [("wsi", 3), ("ct", 2), ("wsi", 1)])
def test_wrong_coordinate_width_is_an_error(modality, width, tmp_path):
    bag = grid_bag(side=4, modality=modality, path=tmp_path / "bag.h5")
    bag.coords = np.zeros((bag.num_patches, width))
    with pytest.raises(
        RadiopathInputError, match=f"needs {2 if modality == 'wsi' else 3}-D"
    ) as info:
        build_graph(bag)
    assert "bag.h5" in str(info.value) and "'coords'" in str(info.value)


def test_not_a_bag_is_an_error():
    with pytest.raises(RadiopathInputError, match="EmbeddingBag"):
        build_graph(np.zeros((4, 2)))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"threshold": -1}, "threshold"),
        ({"edge_rule": "gabriel"}, "edge_rule"),
        ({"k": 2.5}, "k"),
        ({"lambda_f": -0.1}, "lambda_f"),
        ({"max_edge_length": 0}, "max_edge_length"),
        ({"edge_rule": "radius"}, "radius"),
        ({"not_an_option": 1}, "not_an_option"),
    ],
)
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(RadiopathInputError, match=f"'{field}'"):
        build_graph(grid_bag(side=4), **kwargs)


def test_unknown_preset_and_wrong_modality():
    with pytest.raises(RadiopathInputError, match="unknown graph preset 'nope'.*wsi-clustered"):
        build_graph(grid_bag(side=4), "nope")
    with pytest.raises(RadiopathInputError, match="is for 'ct' bags, not 'wsi'"):
        build_graph(grid_bag(side=4), "ct-clustered-3d")


def test_qhull_failure_falls_back_to_neighbours(monkeypatch, caplog):
    """Should Qhull fail even on joggled input, the graph still builds (k-NN edges, warned)."""
    from scipy.spatial import QhullError

    import radiopath.graph.neighbours as neighbours

    def broken(*args, **kwargs):
        raise QhullError("QH6154 Qhull precision error: initial simplex is flat")

    monkeypatch.setattr(neighbours, "Delaunay", broken)
    bag = grid_bag(side=5)
    with caplog.at_level(logging.WARNING, logger="radiopath.graph"):
        g = build_graph(bag, "wsi-patch-knn", edge_rule="delaunay")
    assert "Delaunay triangulation failed" in caplog.text
    reference = build_graph(bag, "wsi-patch-knn", k=4)
    assert edge_set(g.edge_index) == edge_set(reference.edge_index)
