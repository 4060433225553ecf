"""Figures: importance maps over slides and CT volumes, and report plots."""

from radiopath.viz.importance import (
    planted_importance_auc,
    plot_ct_importance,
    plot_wsi_importance,
    rasterize,
    read_importance,
    render_importance,
)

__all__ = [
    "planted_importance_auc",
    "plot_ct_importance",
    "plot_wsi_importance",
    "rasterize",
    "read_importance",
    "render_importance",
]
