"""Slides: tissue mask, tiling at a target mpp, tile reading, one slide to an embedding file."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile
from torch.utils.data import DataLoader

from radiopath.errors import RadiopathInputError
from radiopath.extract.encoders import get_encoder
from radiopath.extract.wsi import (
    TileDataset,
    extract_slide,
    open_slide,
    otsu_threshold,
    read_downsampled,
    slide_mpp,
    tile_grid,
    tissue_mask,
)
from radiopath.io import read_embeddings, write_embeddings


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_openslide_reads_tifffile_pyramid(tissue_slide):
    path, rgb, _ = tissue_slide
    slide = open_slide(path)
    assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
    assert slide.dimensions == (rgb.shape[1], rgb.shape[0])
    assert slide.level_count >= 3
    assert slide_mpp(slide, path) == pytest.approx(0.5)


def test_otsu_threshold_separates_two_modes():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 2000)])
    t = otsu_threshold(np.clip(values, 0, 1))
    assert (values[:5000] < t).all() and (values[5000:] > t).all()
    assert 0.25 < t < 0.45  # the middle of the gap between the modes
    overlapping = np.concatenate([rng.normal(0.3, 0.1, 5000), rng.normal(0.6, 0.1, 5000)])
    assert otsu_threshold(np.clip(overlapping, 0, 1)) == pytest.approx(0.45, abs=0.03)


def test_tissue_mask_and_tiles_cover_the_known_region(tissue_slide):
    path, _, truth = tissue_slide
    slide = open_slide(path)
    tissue = tissue_mask(slide, mpp=0.5, mask_mpp=8.0)
    dsx, dsy = tissue.downsample
    assert dsx == pytest.approx(16, rel=0.01)
    # Ground truth at mask resolution: the majority of each mask cell's pixels.
    h, w = tissue.mask.shape
    cells = truth[: h * 16, : w * 16].reshape(h, 16, w, 16).mean(axis=(1, 3)) > 0.5
    assert iou(tissue.mask, cells) > 0.95

    tile0 = 128  # 64 px at 1 um/px
    coords = tile_grid(slide.dimensions, tissue, tile0, min_tissue=0.5)
    covered = np.zeros_like(truth)
    for x, y in coords:
        covered[y : y + tile0, x : x + tile0] = True
        # Each kept tile is mostly tissue.
        assert truth[y : y + tile0, x : x + tile0].mean() > 0.4
    assert iou(covered, truth) > 0.85
    # Every tile that is entirely tissue was kept.
    full = [
        (x, y)
        for y in range(0, truth.shape[0] - tile0 + 1, tile0)
        for x in range(0, truth.shape[1] - tile0 + 1, tile0)
        if truth[y : y + tile0, x : x + tile0].all()
    ]
    kept = {tuple(c) for c in coords.tolist()}
    assert set(full) <= kept


@pytest.mark.parametrize("workers", [0, 2])
def test_tiles_read_back_the_pixels_at_their_coordinates(coded_slide, workers):
    path, rgb = coded_slide
    rng = np.random.default_rng(1)
    coords = np.stack([rng.integers(0, 1536 - 64, 12), rng.integers(0, 1280 - 64, 12)], 1)
    # Target = level 0: tiles are the level-0 pixels themselves.
    ds = TileDataset(path, coords, tile_size=64, patch_size=64)
    assert ds.level == 0
    tiles = np.concatenate(list(DataLoader(ds, batch_size=5, num_workers=workers)))
    for (x, y), tile in zip(coords, tiles):
        np.testing.assert_array_equal(tile.transpose(1, 2, 0), rgb[y : y + 64, x : x + 64])
    # Target = 2x coarser: read from pyramid level 1 at coords / 2.
    level1 = tifffile.imread(path, key=1)
    coords2 = (coords // 2) * 2  # even level-0 corners map exactly onto level-1 pixels
    ds = TileDataset(path, coords2, tile_size=128, patch_size=64)
    assert ds.level == 1 and ds.read_size == 64
    for (x, y), tile in zip(coords2, ds):
        np.testing.assert_array_equal(
            tile.numpy().transpose(1, 2, 0), level1[y // 2 : y // 2 + 64, x // 2 : x // 2 + 64]
        )


def test_extract_slide_writes_the_contract(tissue_slide, tmp_path):
    path, rgb, truth = tissue_slide
    enc = get_encoder("handcrafted", "wsi")
    bag = extract_slide(path, enc, mpp=1.0, patch_size=64, batch_size=16)
    assert bag.modality == "wsi" and bag.mpp == pytest.approx(0.5)
    assert bag.patch_size == 128  # level-0 pixels
    assert bag.coords.shape[1] == 2 and (bag.coords % 128 == 0).all()
    assert bag.features.shape == (len(bag.coords), enc.dim)
    # The tissue fraction feature is high on tiles (tissue only), and the stored file loads.
    tissue_col = 17
    assert np.median(bag.features[:, tissue_col]) > 0.9
    out = write_embeddings(tmp_path / "s.h5", bag)
    back = read_embeddings(out, modality="wsi")
    np.testing.assert_array_equal(back.coords, bag.coords)
    assert back.encoder == "handcrafted" and back.extra_attrs["target_mpp"] == 1.0


def test_blank_slide_has_no_tissue(tmp_path):
    from radiopath.synthetic_images import write_pyramidal_tiff

    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(242, 2, size=(512, 512, 3)), 0, 255).astype(np.uint8)
    path = write_pyramidal_tiff(tmp_path / "blank.tiff", glass, mpp=0.5)
    with pytest.raises(RadiopathInputError, match="no tissue tile found") as err:
        extract_slide(path, get_encoder("handcrafted", "wsi"), mpp=0.5, patch_size=64)
    assert "blank.tiff" in str(err.value)


def test_slide_without_resolution_needs_an_override(tmp_path, tissue_slide):
    _, rgb, _ = tissue_slide
    path = tmp_path / "nores.tiff"
    with tifffile.TiffWriter(path) as tif:
        tif.write(rgb[:512, :512], tile=(256, 256), photometric="rgb", compression="zlib")
    slide = open_slide(path)
    with pytest.raises(RadiopathInputError, match="does not record its resolution") as err:
        slide_mpp(slide, path)
    assert "field 'mpp'" in str(err.value) and "nores.tiff" in str(err.value)
    assert slide_mpp(slide, path, override=0.25) == 0.25


def test_unreadable_and_missing_slides_are_named(tmp_path):
    bad = tmp_path / "corrupt.svs"
    bad.write_bytes(b"not a slide at all" * 100)
    with pytest.raises(RadiopathInputError, match="corrupt.svs"):
        open_slide(bad)
    with pytest.raises(RadiopathInputError, match="does not exist"):
        open_slide(tmp_path / "absent.tiff")


def test_large_levels_are_read_in_strips(coded_slide):
    path, rgb = coded_slide
    slide = open_slide(path)
    whole = read_downsampled(slide, 0, (384, 320))
    strips = read_downsampled(slide, 0, (384, 320), max_pixels=1536 * 40)
    np.testing.assert_array_equal(whole, strips)
    np.testing.assert_array_equal(read_downsampled(slide, 0, (1536, 1280), max_pixels=10**5), rgb)
