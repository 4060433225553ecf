"""Importance maps: the raster is exact and the drawn images carry the planted signal."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.image import imread

from radiopath.datasets import load_planted_mask
from radiopath.errors import RadiopathInputError
from radiopath.io import read_cohort, read_embeddings
from radiopath.viz.importance import (
    CMAP,
    most_important_cell,
    planted_importance_auc,
    plot_ct_importance,
    plot_wsi_importance,
    rasterize,
    read_importance,
    render_importance,
)


def write_importance(path, coords, values):
    cols = ["x", "y", "z"][: coords.shape[1]]
    frame = pd.DataFrame(coords, columns=cols)
    frame["importance"] = values
    frame.to_csv(path, index=False)
    return path


def decode_png(path):
    """Map each pixel back to [0, 1] through the colormap; NaN for pixels not on it."""
    rgb = imread(path)[..., :3]
    lut = colormaps[CMAP](np.linspace(0, 1, 256))[:, :3]
    flat = rgb.reshape(-1, 3)
    dist = ((flat[:, None, :] - lut[None]) ** 2).sum(-1)
    best = dist.argmin(1)
    value = best / 255.0
    value[dist.min(1) > 1e-3] = np.nan
    return value


def test_rasterize_is_exact():
    coords = np.array([[0, 0], [256, 0], [0, 512], [256, 512]])
    grid, origin, size = rasterize(coords, np.array([1.0, 2.0, 3.0, 4.0]))
    assert size == 256 and origin.tolist() == [0, 0]
    assert grid.shape == (3, 2)  # rows = y cells, cols = x cells
    assert grid[0, 0] == 1 and grid[0, 1] == 2 and grid[2, 0] == 3 and grid[2, 1] == 4
    assert np.isnan(grid[1]).all()
    grid3, _, _ = rasterize(np.array([[0, 0, 0], [8, 0, 16]]), np.array([5.0, 7.0]))
    assert grid3.shape == (2, 1, 3) and grid3[1, 0, 2] == 7


@pytest.mark.parametrize("modality", ["wsi", "ct"])
def test_maps_carry_the_planted_signal(small_cohort, tmp_path, modality):
    cohort = read_cohort(small_cohort)
    patient = cohort.patients[0]
    bag = read_embeddings(patient.files[modality][0])
    planted = load_planted_mask(small_cohort.parent, patient.patient_id, modality)
    rng = np.random.default_rng(0)
    importance = planted * 1.0 + rng.uniform(0, 0.3, size=len(planted))
    assert planted_importance_auc(importance, planted) == 1.0
    if modality == "wsi":
        ax = plot_wsi_importance(bag.coords, importance, patch_size=bag.patch_size)
        drawn = ax.images[-1].get_array()
        truth, _, _ = rasterize(bag.coords, planted.astype(float), bag.patch_size)
        keep = ~np.ma.getmaskarray(drawn)
        r = np.corrcoef(np.asarray(drawn)[keep], truth[keep])[0, 1]
        plt.close("all")
    else:
        fig = plot_ct_importance(bag.coords, importance, patch_size=bag.patch_size)
        grid, _, _ = rasterize(bag.coords, importance, bag.patch_size)
        truth, _, _ = rasterize(bag.coords, planted.astype(float), bag.patch_size)
        cx, cy, cz = most_important_cell(grid)
        assert truth[cx, cy, cz] == 1.0  # the slices go through the planted region
        truth_planes = [truth[:, :, cz].T, truth[:, cy, :].T, truth[cx, :, :].T]
        drawn, expected = [], []
        for ax, plane in zip(fig.axes[:3], truth_planes):
            image = ax.images[-1].get_array()
            keep = ~np.ma.getmaskarray(image)
            drawn.append(np.asarray(image)[keep])
            expected.append(plane[keep])
        r = np.corrcoef(np.concatenate(drawn), np.concatenate(expected))[0, 1]
        plt.close("all")
    assert r > 0.9
    # The written PNG: the share of hot pixels matches the planted share of the map's cells.
    csv = write_importance(tmp_path / f"imp.{modality}.csv", bag.coords, importance)
    png = render_importance(
        csv, tmp_path / f"imp.{modality}.png", patch_size=bag.patch_size, vmin=0.0, vmax=1.3
    )
    values = decode_png(png)
    on_map = values[np.isfinite(values)]
    assert len(on_map) > 500
    hot = (on_map > 0.6).mean()
    if modality == "wsi":
        truth_share = planted.mean()
        assert abs(hot - truth_share) < 0.1, (hot, truth_share)
    else:
        assert hot > 0.02


def test_bad_importance_files(tmp_path):
    with pytest.raises(RadiopathInputError, match="does not exist"):
        read_importance(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(bad, index=False)
    with pytest.raises(RadiopathInputError, match="expected columns x, y"):
        read_importance(bad)
    nan = write_importance(tmp_path / "nan.csv", np.zeros((2, 2)), np.array([np.nan, 1.0]))
    with pytest.raises(RadiopathInputError, match="field 'importance'"):
        read_importance(nan)
