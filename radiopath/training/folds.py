"""Outer cross-validation folds: stratified by event, repeated, written to ``folds.csv``, reusable.

A folds table has one row per patient and repeat: ``patient_id, repeat, fold``. Repeat ``r``
of ``R`` is a stratified ``K``-fold split of the whole cohort with its own seed; its folds are
numbered ``r * K .. r * K + K - 1``, so a fold number names one train/test split of the whole
run and every file keyed by fold (``embeddings/fold_<k>.npz``, ``metrics.csv``) needs no
repeat column. Files without a ``repeat`` column (one repeat) are read as repeat 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from radiopath.errors import RadiopathInputError
from radiopath.runkit import write_csv

COLUMNS = ["patient_id", "repeat", "fold"]


def make_folds(
    patient_ids: Sequence[str],
    events: Sequence[int],
    n_folds: int = 5,
    seed: int = 0,
    repeats: int = 1,
) -> pd.DataFrame:
    """Assign every patient to one of ``n_folds`` test folds per repeat, stratified by event.

    Repeat ``r`` uses :class:`sklearn.model_selection.StratifiedKFold` with ``shuffle=True``
    and ``random_state=seed + r``, so the same cohort, seed and repeats always give the same
    folds, and repeat 0 is the single split of ``repeats=1``.

    Returns
    -------
    DataFrame
        ``patient_id, repeat, fold``: ``repeats`` blocks in the order of ``patient_ids``, fold
        numbers ``repeat * n_folds + k``.
    """
    events = np.asarray(events, dtype=int)
    n_events, n_censored = int(events.sum()), int((events == 0).sum())
    if n_folds < 2:
        raise RadiopathInputError(f"need at least 2 folds, got {n_folds}", field="folds")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise RadiopathInputError(f"must be a positive integer, got {repeats!r}", field="repeats")
    if n_events < n_folds:
        raise RadiopathInputError(
            f"{n_folds} folds need at least {n_folds} events, the cohort has {n_events}",
            field="folds",
        )
    if n_censored and n_censored < n_folds:
        # Too few censored patients to stratify; fall back to stratifying nothing.
        strata = np.zeros_like(events)
    else:
        strata = events
    ids = [str(p) for p in patient_ids]
    blocks = []
    for r in range(int(repeats)):
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed + r)
        fold = np.empty(len(events), dtype=int)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(events)), strata)):
            fold[test] = r * n_folds + k
        blocks.append(pd.DataFrame({"patient_id": ids, "repeat": r, "fold": fold}))
    return pd.concat(blocks, ignore_index=True)


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``patient_id, repeat, fold`` atomically (repeat 0 where the table has none)."""
    path = Path(path)
    table = folds if "repeat" in folds.columns else folds.assign(repeat=0)
    return write_csv(table[COLUMNS], path)


def _integers(table: pd.DataFrame, col: str, path) -> pd.Series:
    values = pd.to_numeric(table[col], errors="coerce")
    bad = values.isna() | (values < 0) | (values != values.round())
    if bad.any():
        raise RadiopathInputError(
            f"{col} must be a non-negative integer",
            path=path,
            patient_id=str(table["patient_id"][bad].iloc[0]),
            field=col,
        )
    return values.astype(int)


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read a folds file (``patient_id, [repeat,] fold``); returns ``patient_id, repeat, fold``."""
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("folds file does not exist", path=path)
    table = pd.read_csv(path, dtype={"patient_id": str})
    for col in ("patient_id", "fold"):
        if col not in table.columns:
            raise RadiopathInputError(
                f"required column is missing (columns: {list(table.columns)})", path=path, field=col
            )
    table["fold"] = _integers(table, "fold", path)
    table["repeat"] = _integers(table, "repeat", path) if "repeat" in table.columns else 0
    return table[COLUMNS]


def check_folds(folds: pd.DataFrame, patient_ids: Sequence[str], source=None) -> pd.DataFrame:
    """Check that every repeat of ``folds`` assigns every patient exactly once.

    A fold number may belong to one repeat only, and each repeat needs at least 2 folds.
    Patients of the table that are not in ``patient_ids`` are dropped. Returns
    ``patient_id, repeat, fold`` with each repeat in the order of ``patient_ids``.
    """
    folds = folds if "repeat" in folds.columns else folds.assign(repeat=0)
    folds = folds.assign(patient_id=folds["patient_id"].astype(str))
    dup = folds[folds.duplicated(["patient_id", "repeat"])]
    if len(dup):
        raise RadiopathInputError(
            f"patient listed twice in the folds (repeat {int(dup['repeat'].iloc[0])})",
            path=source,
            patient_id=str(dup["patient_id"].iloc[0]),
            field="patient_id",
        )
    shared = folds.groupby("fold")["repeat"].nunique()
    if (shared > 1).any():
        raise RadiopathInputError(
            f"fold {int(shared[shared > 1].index[0])} appears in more than one repeat",
            path=source,
            field="fold",
        )
    blocks = []
    for r, part in folds.groupby("repeat", sort=True):
        assigned = dict(zip(part["patient_id"], part["fold"].astype(int)))
        missing = [p for p in patient_ids if p not in assigned]
        if missing:
            where = f" in repeat {r}" if folds["repeat"].nunique() > 1 else ""
            raise RadiopathInputError(
                f"{len(missing)} patient(s) of the cohort have no fold{where} (first: {missing[:3]})",
                path=source,
                patient_id=missing[0],
                field="fold",
            )
        block = pd.DataFrame(
            {
                "patient_id": list(patient_ids),
                "repeat": int(r),
                "fold": [assigned[p] for p in patient_ids],
            }
        )
        if block["fold"].nunique() < 2:
            raise RadiopathInputError(
                "the folds must name at least 2 distinct folds", path=source, field="fold"
            )
        blocks.append(block)
    return pd.concat(blocks, ignore_index=True)[COLUMNS]


def fold_repeats(folds: pd.DataFrame) -> dict[int, int]:
    """``{fold: repeat}`` of a folds table (repeat 0 without a ``repeat`` column)."""
    if "repeat" not in folds.columns:
        return {int(f): 0 for f in folds["fold"].unique()}
    return {int(f): int(r) for f, r in folds.groupby("fold")["repeat"].first().items()}
