"""Patient embeddings exported by one cross-validation fold (``embeddings/fold_<k>.npz``).

Part of :mod:`radiopath.io`, which re-exports these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiopath.errors import RadiopathInputError
from radiopath.runkit import atomic_path

__all__ = ["FoldEmbeddings", "read_fold_embeddings", "write_fold_embeddings"]


@dataclass
class FoldEmbeddings:
    """Patient embeddings exported by one cross-validation fold of a trained aggregator.

    The train and test patients' vectors are both computed by that fold's model, so the
    downstream survival models never see a representation learnt on their test patients.

    Attributes
    ----------
    fold
        Outer fold index.
    patient_id, split, time, event
        ``[n]`` arrays; ``split`` is ``"train"`` or ``"test"``.
    embedding
        ``[n, d]`` float array.
    risk
        ``[n]`` risk from the aggregator's own Cox head (higher = earlier event), or None.
    """

    fold: int
    patient_id: np.ndarray
    split: np.ndarray
    time: np.ndarray
    event: np.ndarray
    embedding: np.ndarray
    risk: np.ndarray | None = None

    def part(self, split: str) -> FoldEmbeddings:
        keep = self.split == split
        return FoldEmbeddings(
            self.fold,
            self.patient_id[keep],
            self.split[keep],
            self.time[keep],
            self.event[keep],
            self.embedding[keep],
            None if self.risk is None else self.risk[keep],
        )


def write_fold_embeddings(path: str | os.PathLike, fold: FoldEmbeddings) -> Path:
    """Write one fold's embeddings as ``.npz`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "fold": np.asarray(fold.fold),
        "patient_id": np.asarray(fold.patient_id, dtype=str),
        "split": np.asarray(fold.split, dtype=str),
        "time": np.asarray(fold.time, dtype=np.float64),
        "event": np.asarray(fold.event, dtype=np.int64),
        "embedding": np.asarray(fold.embedding, dtype=np.float32),
    }
    if fold.risk is not None:
        arrays["risk"] = np.asarray(fold.risk, dtype=np.float64)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: no ".npz" appended
        np.savez_compressed(f, **arrays)
    return path


def read_fold_embeddings(path: str | os.PathLike) -> FoldEmbeddings:
    """Read a file written by :func:`write_fold_embeddings`."""
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("fold embedding file does not exist", path=path)
    with np.load(path, allow_pickle=False) as z:
        emb = z["embedding"]
        if not np.isfinite(emb).all():
            raise RadiopathInputError("embeddings contain NaN or inf", path=path, field="embedding")
        return FoldEmbeddings(
            fold=int(z["fold"]),
            patient_id=z["patient_id"],
            split=z["split"],
            time=z["time"],
            event=z["event"],
            embedding=emb,
            risk=z["risk"] if "risk" in z.files else None,
        )
