"""radiopath/fold_embeddings.py: a fold's embeddings and risks round-trip through their file."""

from __future__ import annotations

import numpy as np

from radiopath.io import (
    FoldEmbeddings,
    read_fold_embeddings,
    write_fold_embeddings,
)


def test_fold_embeddings_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    fold = FoldEmbeddings(
        fold=2,
        patient_id=np.array(["a", "b", "c"]),
        split=np.array(["train", "train", "test"]),
        time=np.array([1.0, 2.0, 3.0]),
        event=np.array([1, 0, 1]),
        embedding=rng.normal(size=(3, 5)).astype(np.float32),
        risk=np.array([0.1, -0.2, 0.3]),
    )
    back = read_fold_embeddings(write_fold_embeddings(tmp_path / "f.npz", fold))
    assert back.fold == 2
    np.testing.assert_array_equal(back.embedding, fold.embedding)
    np.testing.assert_array_equal(back.patient_id, fold.patient_id)
    test = back.part("test")
    assert test.patient_id.tolist() == ["c"] and test.risk.tolist() == [0.3]
