"""plot_graph: nodes coloured by a per-node value over a thumbnail or a CT slice."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from graph_helpers import grid_bag  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402

from radiopath.errors import RadiopathInputError  # noqa: E402
from radiopath.graph import build_graph, plot_graph  # noqa: E402


def _parts(ax):
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    return points, lines


def test_wsi_over_thumbnail(tmp_path):
    g = build_graph(grid_bag(side=10))
    values = np.linspace(0, 1, g.num_nodes)
    thumb = np.random.default_rng(0).uniform(size=(40, 40, 3))
    ax = plot_graph(g, values, background=thumb, background_scale=32.0)
    points, lines = _parts(ax)
    assert len(points) == 1 and np.allclose(points[0].get_array(), values)
    assert np.allclose(points[0].get_offsets(), g.pos.numpy())
    assert len(lines[0].get_segments()) == g.edge_index.size(1) // 2
    image = ax.get_images()[0]
    assert image.get_extent() == [0.0, 40 * 32.0, 40 * 32.0, 0.0]
    ax.figure.savefig(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 0
    plt.close("all")


def test_ct_slice_keeps_nodes_in_the_slab():
    g = build_graph(grid_bag(side=6, modality="ct", spacing=(1.0, 1.0, 1.0)), "ct-patch-knn")
    z = g.pos[:, 2].numpy()
    target = float(np.unique(z)[2])
    fig, ax = plt.subplots()
    out = plot_graph(
        g,
        "patch_count",
        ax=ax,
        background=np.zeros((48, 48)),
        background_scale=(1.0, 1.0),
        slice_position=target,
        slab=1.0,
    )
    assert out is ax
    points, lines = _parts(ax)
    assert len(points[0].get_offsets()) == int((z == target).sum()) == 36
    assert np.allclose(points[0].get_offsets(), g.pos[z == target][:, :2].numpy())
    # Only edges with both ends in the slice are drawn.
    ei = g.edge_index.numpy()
    in_slice = (z[ei[0]] == target) & (z[ei[1]] == target) & (ei[0] < ei[1])
    assert len(lines[0].get_segments()) == in_slice.sum() > 0
    assert in_slice.sum() < (ei[0] < ei[1]).sum()
    plt.close("all")


def test_sagittal_projection_and_default_colours():
    g = build_graph(grid_bag(side=4, modality="ct"), "ct-clustered-3d")
    ax = plot_graph(g, slice_axis=0)
    points, _ = _parts(ax)
    assert np.allclose(points[0].get_offsets(), g.pos[:, [1, 2]].numpy())
    assert np.allclose(points[0].get_array(), g.patch_count.numpy())
    plt.close("all")


def test_bad_values():
    g = build_graph(grid_bag(side=5))
    with pytest.raises(RadiopathInputError, match=f"one value per node \\({g.num_nodes}\\)"):
        plot_graph(g, np.ones(g.num_nodes + 1))
    with pytest.raises(RadiopathInputError, match="no attribute 'importance'"):
        plot_graph(g, "importance")
    with pytest.raises(RadiopathInputError, match="background"):
        plot_graph(g, background=np.zeros(5))
    plt.close("all")
