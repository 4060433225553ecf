"""build_graph: structure of the graph, checked against independent recomputation; degenerate
and bad inputs give a clear error or a documented degenerate graph."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from graph_helpers import (
    brute_delaunay_edges,
    brute_knn_edges,
    edge_set,
    grid_bag,
    random_bag,
)
from torch_geometric.data import Batch, Data

from radiopath.errors import RadiopathInputError
from radiopath.graph import build_graph
from radiopath.io import EmbeddingBag

PRESETS = ["wsi-clustered", "wsi-patch-knn"]
ALL_PRESETS = ["wsi-clustered", "wsi-patch-knn", "ct-clustered-3d", "ct-patch-knn"]


def _check_structure(g, bag):
    n = bag.num_patches
    a = g.assignment.numpy()
    assert g.assignment.dtype == torch.long and a.shape == (n,)
    # Each patch in exactly one node, every node non-empty.
    assert a.min() == 0 and a.max() == g.num_nodes - 1
    assert np.array_equal(np.bincount(a, minlength=g.num_nodes), g.patch_count.numpy())
    assert (g.patch_count > 0).all()
    # Node features and positions: means of their patches, recomputed node by node.
    centres = (bag.coords + 0.5 * (bag.patch_size or 0)).astype(np.float64)
    if bag.modality == "wsi" and bag.mpp:
        centres = centres * bag.mpp
    if bag.modality == "ct" and bag.spacing:
        centres = centres * np.asarray(bag.spacing)
    for node in range(g.num_nodes):
        members = np.nonzero(a == node)[0]
        np.testing.assert_allclose(
            g.x[node].numpy(), bag.features[members].mean(0), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(g.pos[node].numpy(), centres[members].mean(0), rtol=1e-5)
    assert g.x.dtype == torch.float32 and g.pos.dtype == torch.float32
    # Edges: long, in range, symmetric, no self-loops, no duplicates.
    ei = g.edge_index
    assert ei.dtype == torch.long and ei.shape[0] == 2
    assert ei.numel() == 0 or (ei.min() >= 0 and ei.max() < g.num_nodes)
    assert not (ei[0] == ei[1]).any()
    pairs = set(map(tuple, ei.t().tolist()))
    assert len(pairs) == ei.shape[1]
    assert pairs == {(j, i) for i, j in pairs}
    assert np.array_equal(g.patch_coords.numpy(), bag.coords)


@pytest.mark.parametrize("preset", PRESETS)
def test_wsi_graph_structure(preset):
    bag = grid_bag(side=15, dim=8)
    g = build_graph(bag, preset)
    assert isinstance(g, Data)
    _check_structure(g, bag)
    assert g.modality == "wsi" and g.units == "um" and g.source == ""
    assert g.build_config["name"] == preset
    if preset == "wsi-patch-knn":
        assert torch.equal(g.assignment, torch.arange(bag.num_patches))
        assert g.num_nodes == bag.num_patches
    else:
        assert 1 < g.num_nodes < bag.num_patches / 2


@pytest.mark.parametrize("preset", ["ct-clustered-3d", "ct-patch-knn"])
def test_ct_graph_structure_3d(preset):
    bag = grid_bag(side=7, dim=5, modality="ct")
    g = build_graph(bag, preset)
    _check_structure(g, bag)
    assert g.pos.shape[1] == 3 and g.units == "mm"


def test_default_preset_per_modality():
    assert build_graph(grid_bag(side=6)).build_config["name"] == "wsi-clustered"
    assert build_graph(grid_bag(side=4, modality="ct")).build_config["name"] == "ct-clustered-3d"


def test_ct_spacing_is_respected():
    """With slices 10x farther apart than pixels, the 4 nearest neighbours are all in-plane."""
    bag = grid_bag(side=6, modality="ct", spacing=(1.0, 1.0, 10.0))
    g = build_graph(bag, "ct-patch-knn", k=4)
    z = g.pos[:, 2]
    assert torch.equal(z[g.edge_index[0]], z[g.edge_index[1]])
    # Isotropic spacing: z neighbours appear.
    iso = build_graph(grid_bag(side=6, modality="ct", spacing=(1.0, 1.0, 1.0)), "ct-patch-knn")
    assert not torch.equal(iso.pos[iso.edge_index[0], 2], iso.pos[iso.edge_index[1], 2])


def test_patch_delaunay_matches_brute_force_2d():
    bag = random_bag(n=25, seed=1)
    g = build_graph(bag, "wsi-patch-knn", edge_rule="delaunay")
    assert edge_set(g.edge_index) == brute_delaunay_edges(bag.physical_coords)


def test_patch_delaunay_matches_brute_force_3d():
    bag = random_bag(n=14, seed=2, modality="ct")
    g = build_graph(bag, "ct-patch-knn", edge_rule="delaunay")
    assert edge_set(g.edge_index) == brute_delaunay_edges(bag.physical_coords)


def test_cluster_edges_join_only_neighbouring_clusters():
    """Clustered-graph edges are the Delaunay edges of the centroids no longer than the limit."""
    bag = random_bag(n=150, dim=4, seed=3, extent=3000)
    g = build_graph(bag, "wsi-clustered", threshold=0.9, max_edge_length=6.0)
    assert 10 < g.num_nodes < 60
    pos = g.pos.double().numpy()
    unit = g.build_config["resolved"]["length_scale"]
    expected = {
        (i, j)
        for i, j in brute_delaunay_edges(pos)
        if np.linalg.norm(pos[i] - pos[j]) <= 6.0 * unit
    }
    assert edge_set(g.edge_index) == expected
    assert 0 < len(expected) < len(brute_delaunay_edges(pos))


@pytest.mark.parametrize("k", [1, 4, 8])
def test_knn_edges_match_brute_force(k):
    bag = random_bag(n=60, seed=4)
    g = build_graph(bag, "wsi-patch-knn", k=k)
    assert edge_set(g.edge_index) == brute_knn_edges(bag.physical_coords, k)


def test_radius_edges_match_brute_force():
    bag = grid_bag(side=8, mpp=None)  # pixel units, pitch 256
    g = build_graph(bag, "wsi-patch-knn", edge_rule="radius", radius=1.5)
    pts = bag.physical_coords
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    expected = {(i, j) for i, j in zip(*np.nonzero((dist <= 1.5 * 256) & (dist > 0))) if i < j}
    assert edge_set(g.edge_index) == expected
    assert g.units == "px"


def test_self_loops_only_when_asked():
    bag = grid_bag(side=6)
    g = build_graph(bag, "wsi-patch-knn", self_loops=True)
    loops = g.edge_index[0] == g.edge_index[1]
    assert loops.sum() == g.num_nodes
    plain = build_graph(bag, "wsi-patch-knn")
    assert edge_set(g.edge_index[:, ~loops]) == edge_set(plain.edge_index)


def test_same_seed_same_graph_and_seed_breaks_ties():
    bag = grid_bag(side=14)
    a, b = build_graph(bag, seed=7), build_graph(bag, seed=7)
    for key in ("x", "pos", "edge_index", "assignment", "patch_count"):
        assert torch.equal(a[key], b[key])
    # Identical features on a regular grid: only the seed decides between tied merges.
    tied = grid_bag(side=14)
    tied.features[:] = 1.0
    graphs = [build_graph(tied, seed=s).assignment for s in range(3)]
    assert not all(torch.equal(graphs[0], other) for other in graphs[1:])


def test_pitch_units_make_graphs_resolution_free():
    """The same slide at another magnification gives the same clusters."""
    low = grid_bag(side=12, seed=3)
    high = EmbeddingBag(
        features=low.features, coords=low.coords * 2, modality="wsi", patch_size=512, mpp=0.25
    )
    assert torch.equal(build_graph(low).assignment, build_graph(high).assignment)


def test_threshold_controls_cluster_size():
    bag = grid_bag(side=16)
    sizes = [build_graph(bag, threshold=t).num_nodes for t in (0.6, 0.8, 0.9)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_overrides_are_recorded_in_build_config():
    g = build_graph(grid_bag(side=6), "wsi-clustered", threshold=0.7, k=5)
    cfg = g.build_config
    assert cfg["threshold"] == 0.7 and cfg["k"] == 5
    assert cfg["resolved"]["pitch"] == pytest.approx(128.0)
    assert len(cfg["config_hash"]) == 16


def test_batching_offsets_assignment():
    g1, g2 = build_graph(grid_bag(side=6, seed=0)), build_graph(grid_bag(side=5, seed=1))
    batch = Batch.from_data_list([g1, g2])
    n1 = g1.assignment.numel()
    assert torch.equal(batch.assignment[:n1], g1.assignment)
    assert torch.equal(batch.assignment[n1:], g2.assignment + g1.num_nodes)


# --------------------------------------------------------------------------- degenerate and bad bags


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
