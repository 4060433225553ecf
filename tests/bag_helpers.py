"""``make_bag``: a small random embedding bag, shared by the tests of the embedding files
(tests/test_embeddings.py) and of the cohort reader (tests/test_io.py); imported by name, as
tests/ is on ``sys.path`` (tests/conftest.py)."""

from __future__ import annotations

import numpy as np

from radiopath.embeddings import EmbeddingBag


def make_bag(modality="wsi", n=10, d=4, seed=0, **kw) -> EmbeddingBag:
    """``n`` random ``d``-wide features of ``modality`` with coordinates of its dimension."""
    rng = np.random.default_rng(seed)
    ndim = 2 if modality == "wsi" else 3
    return EmbeddingBag(
        features=rng.normal(size=(n, d)).astype(np.float32),
        coords=rng.integers(0, 1000, size=(n, ndim)),
        modality=modality,
        patch_size=256 if modality == "wsi" else 8,
        mpp=0.5 if modality == "wsi" else None,
        spacing=(0.8, 0.8, 2.5) if modality == "ct" else None,
        encoder="test",
        **kw,
    )
