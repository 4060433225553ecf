"""Outer cross-validation folds: stratified by event, written to ``folds.csv``, reusable."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from radiopath.errors import RadiopathInputError


def make_folds(
    patient_ids: Sequence[str], events: Sequence[int], n_folds: int = 5, seed: int = 0
) -> pd.DataFrame:
    """Assign every patient to one of ``n_folds`` test folds, stratified by the event indicator.

    Uses :class:`sklearn.model_selection.StratifiedKFold` with ``shuffle=True`` and
    ``random_state=seed``, so the same cohort and seed always give the same folds.

    Returns
    -------
    DataFrame
        ``patient_id, fold`` in the order of ``patient_ids``.
    """
    events = np.asarray(events, dtype=int)
    n_events, n_censored = int(events.sum()), int((events == 0).sum())
    if n_folds < 2:
        raise RadiopathInputError(f"need at least 2 folds, got {n_folds}", field="n_folds")
    if n_events < n_folds:
        raise RadiopathInputError(
            f"{n_folds} folds need at least {n_folds} events, the cohort has {n_events}",
            field="n_folds",
        )
    if n_censored and n_censored < n_folds:
        # Too few censored patients to stratify; fall back to stratifying nothing.
        strata = np.zeros_like(events)
    else:
        strata = events
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.empty(len(events), dtype=int)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(events)), strata)):
        fold[test] = k
    return pd.DataFrame({"patient_id": [str(p) for p in patient_ids], "fold": fold})


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``patient_id, fold`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    folds[["patient_id", "fold"]].to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    """Read a folds file (``patient_id, fold``)."""
    path = Path(path)
    if not path.exists():
        raise RadiopathInputError("folds file does not exist", path=path)
    table = pd.read_csv(path, dtype={"patient_id": str})
    for col in ("patient_id", "fold"):
        if col not in table.columns:
            raise RadiopathInputError(
                f"required column is missing (columns: {list(table.columns)})", path=path, field=col
            )
    folds = pd.to_numeric(table["fold"], errors="coerce")
    if folds.isna().any() or (folds < 0).any() or (folds != folds.round()).any():
        bad = table["patient_id"][folds.isna() | (folds < 0) | (folds != folds.round())].iloc[0]
        raise RadiopathInputError(
            "fold must be a non-negative integer", path=path, patient_id=str(bad), field="fold"
        )
    table["fold"] = folds.astype(int)
    return table[["patient_id", "fold"]]


def check_folds(folds: pd.DataFrame, patient_ids: Sequence[str], source=None) -> pd.DataFrame:
    """Check that ``folds`` assigns every patient exactly once; return it in cohort order."""
    dup = folds["patient_id"][folds["patient_id"].duplicated()]
    if len(dup):
        raise RadiopathInputError(
            "patient listed twice in the folds",
            path=source,
            patient_id=str(dup.iloc[0]),
            field="patient_id",
        )
    assigned = dict(zip(folds["patient_id"].astype(str), folds["fold"].astype(int)))
    missing = [p for p in patient_ids if p not in assigned]
    if missing:
        raise RadiopathInputError(
            f"{len(missing)} patient(s) of the cohort have no fold (first: {missing[:3]})",
            path=source,
            patient_id=missing[0],
            field="fold",
        )
    out = pd.DataFrame(
        {"patient_id": list(patient_ids), "fold": [assigned[p] for p in patient_ids]}
    )
    if out["fold"].nunique() < 2:
        raise RadiopathInputError(
            "the folds must name at least 2 distinct folds", path=source, field="fold"
        )
    return out
