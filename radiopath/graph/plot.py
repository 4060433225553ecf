"""Draw a spatial graph over a slide thumbnail or a CT slice, nodes coloured by a value."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from radiopath.errors import RadiopathInputError


def _node_values(data: Data, values, n_nodes: int) -> tuple[np.ndarray, str]:
    if values is None:
        values = "patch_count"
    if isinstance(values, str):
        name = values
        if name not in data:
            raise RadiopathInputError(
                f"the graph has no attribute {name!r} to colour by", field=name
            )
        values = data[name]
    else:
        name = "value"
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) != n_nodes:
        raise RadiopathInputError(
            f"need one value per node ({n_nodes}), got {len(values)}", field="values"
        )
    return values, name


def plot_graph(
    data: Data,
    values: np.ndarray | torch.Tensor | str | None = None,
    ax=None,
    background: np.ndarray | None = None,
    background_scale: float | Sequence[float] | None = None,
    slice_axis: int = 2,
    slice_position: float | None = None,
    slab: float | None = None,
    edges: bool = True,
    cmap: str = "viridis",
    node_size: float | np.ndarray | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    edge_color=(0.0, 0.0, 0.0, 0.3),
    title: str | None = None,
):
    """Draw nodes (coloured by a per-node value) and edges of a graph.

    Parameters
    ----------
    data
        A graph from :func:`radiopath.graph.build_graph` (needs ``pos`` and ``edge_index``).
    values
        One value per node (array or tensor), the name of a node attribute, or None for
        ``patch_count``.
    ax
        Matplotlib axes to draw into (a new figure when None).
    background
        A 2-D image (``[H, W]`` or ``[H, W, 3|4]``) under the graph: a slide thumbnail, or
        for 3-D graphs the CT slice at ``slice_position``. Row ``r``, column ``c`` covers the
        physical point (``c * sx``, ``r * sy``) in the graph's ``units`` (for 3-D, the first
        and second of the two in-plane axes).
    background_scale
        Physical size of one background pixel: ``(sx, sy)`` or one number; e.g.
        ``downsample * mpp`` for a thumbnail, the in-plane voxel spacing for a CT slice.
        Default: the image is stretched over the nodes' extent.
    slice_axis
        For 3-D graphs: the axis orthogonal to the drawing plane (2 = z, an axial slice).
    slice_position
        For 3-D graphs: draw only nodes within ``slab / 2`` of this coordinate along
        ``slice_axis`` (physical units). None projects all nodes onto the plane.
    slab
        Thickness of the slab around ``slice_position``; default two patch pitches.
    edges, edge_color
        Draw edges (between drawn nodes), and their colour.
    cmap, vmin, vmax, colorbar
        Colour mapping of ``values``.
    node_size
        Marker area(s); default grows with the square root of ``patch_count``.
    title
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    pos = _positions(data)
    vals, name = _node_values(data, values, len(pos))
    xy, keep = _drawing_plane(data, pos, slice_axis, slice_position, slab)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 6))
    if background is not None:
        _draw_background(ax, background, background_scale, xy)
    sizes = _node_sizes(data, node_size, len(pos))
    if edges and data.edge_index.numel():
        _draw_edges(ax, data.edge_index, xy, keep, edge_color)
    colour = {"cmap": cmap, "vmin": vmin, "vmax": vmax}
    points = ax.scatter(
        xy[keep, 0], xy[keep, 1], c=vals[keep], s=sizes[keep], zorder=2, edgecolors="none", **colour
    )
    if colorbar and keep.any():
        ax.figure.colorbar(points, ax=ax, label=name, shrink=0.8)
    _set_axes(ax, getattr(data, "units", ""), background is None, title)
    return ax


def _positions(data: Data) -> np.ndarray:
    """``[N, 2|3]`` node positions as float64; the graph must have ``pos`` and ``edge_index``."""
    if getattr(data, "pos", None) is None or getattr(data, "edge_index", None) is None:
        raise RadiopathInputError("the graph needs 'pos' and 'edge_index' to be drawn", field="pos")
    return data.pos.detach().cpu().numpy().astype(np.float64)


def _drawing_plane(data: Data, pos: np.ndarray, slice_axis, slice_position, slab):
    """``(xy, keep)``: the in-plane coordinates of every node and which nodes are drawn.

    A 3-D graph is drawn in the plane orthogonal to ``slice_axis``, keeping the nodes within
    ``slab / 2`` of ``slice_position`` when one is given.
    """
    n_nodes, dim = pos.shape
    keep = np.ones(n_nodes, dtype=bool)
    if dim == 2:
        return pos, keep
    if dim != 3:
        raise RadiopathInputError(f"cannot draw {dim}-D positions", field="pos")
    if slice_axis not in (0, 1, 2):
        raise RadiopathInputError(
            f"slice_axis must be 0, 1 or 2, got {slice_axis}", field="slice_axis"
        )
    plane = [a for a in range(3) if a != slice_axis]
    if slice_position is not None:
        if slab is None:
            pitch = (getattr(data, "build_config", None) or {}).get("resolved", {}).get("pitch")
            slab = 2.0 * float(pitch) if pitch else np.ptp(pos[:, slice_axis]) / 10 or 1.0
        keep = np.abs(pos[:, slice_axis] - slice_position) <= slab / 2
    return pos[:, plane], keep


def _draw_background(ax, background, background_scale, xy: np.ndarray) -> None:
    """Show ``background`` under the graph, scaled to physical units or stretched over ``xy``."""
    image = np.asarray(background)
    if image.ndim not in (2, 3):
        raise RadiopathInputError(
            f"background must be an image [H, W] or [H, W, C], got shape {image.shape}",
            field="background",
        )
    h, w = image.shape[:2]
    if background_scale is None:
        extent = (xy[:, 0].min(), xy[:, 0].max(), xy[:, 1].max(), xy[:, 1].min())
    else:
        sx, sy = np.broadcast_to(np.asarray(background_scale, dtype=float), (2,))
        extent = (0.0, w * sx, h * sy, 0.0)
    ax.imshow(
        image, extent=extent, cmap="gray" if image.ndim == 2 else None, interpolation="nearest"
    )


def _node_sizes(data: Data, node_size, n_nodes: int) -> np.ndarray:
    """``[N]`` marker areas: ``node_size``, or growing with the square root of ``patch_count``."""
    if node_size is None:
        counts = getattr(data, "patch_count", None)
        counts = np.ones(n_nodes) if counts is None else counts.cpu().numpy()
        node_size = np.clip(8.0 * np.sqrt(counts), 4.0, 200.0)
    return np.broadcast_to(np.asarray(node_size, dtype=float), (n_nodes,))


def _draw_edges(ax, edge_index: torch.Tensor, xy: np.ndarray, keep: np.ndarray, color) -> None:
    """One line per undirected edge between drawn nodes, under the nodes."""
    from matplotlib.collections import LineCollection

    ei = edge_index.cpu().numpy()
    ei = ei[:, (ei[0] < ei[1]) & keep[ei[0]] & keep[ei[1]]]
    ax.add_collection(
        LineCollection(
            np.stack([xy[ei[0]], xy[ei[1]]], axis=1),
            colors=[color],
            linewidths=0.6,
            zorder=1,
        )
    )


def _set_axes(ax, units: str, flip_y: bool, title: str | None) -> None:
    """Equal aspect, axis labels in the graph's units, y down (image convention) without a
    background (``imshow`` already sets it), and the title."""
    ax.set_aspect("equal")
    if flip_y and not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_xlabel(units)
    ax.set_ylabel(units)
    if title:
        ax.set_title(title)
