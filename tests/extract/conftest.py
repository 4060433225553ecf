"""Fixtures for the extraction tests: slides written with tifffile, CT files at hand (the
synthetic image cohort, which tests/test_synthetic_images.py uses too, is in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel
import numpy as np
import pytest

from radiopath.synthetic_images import write_pyramidal_tiff

NIBABEL_DATA = Path(os.path.dirname(nibabel.__file__)) / "tests" / "data"


def h_and_e_slide(
    width: int, height: int, ellipse: tuple[float, float, float, float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Glass with one pink, nucleus-speckled elliptical tissue section; returns (rgb, truth)."""
    rng = np.random.default_rng(seed)
    cx, cy, ax, ay = ellipse
    yy, xx = np.mgrid[0:height, 0:width]
    truth = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    rgb = np.empty((height, width, 3), dtype=np.float32)
    rgb[:] = (243, 241, 246)
    rgb[truth] = (228, 160, 192)
    nuclei = truth & (rng.uniform(size=truth.shape) < 0.04)
    rgb[nuclei] = (90, 60, 140)
    rgb += rng.normal(0, 3, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), truth


@pytest.fixture(scope="module")
def tissue_slide(tmp_path_factory):
    """A 2048 x 1536 slide at 0.5 um/px with one known elliptical tissue region."""
    rgb, truth = h_and_e_slide(2048, 1536, (900, 800, 600, 420))
    path = tmp_path_factory.mktemp("slides") / "tissue.tiff"
    write_pyramidal_tiff(path, rgb, mpp=0.5)
    return path, rgb, truth


@pytest.fixture(scope="module")
def coded_slide(tmp_path_factory):
    """A slide whose pixels encode their own position (x, y), to check tile coordinates."""
    h, w = 1280, 1536
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx % 256, yy % 256, (xx // 256) * 16 + (yy // 256)], axis=-1).astype(np.uint8)
    path = tmp_path_factory.mktemp("slides") / "coded.tiff"
    write_pyramidal_tiff(path, rgb, mpp=0.25)
    return path, rgb
