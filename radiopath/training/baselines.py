"""Untrained baselines, written in the run-directory format of a trained aggregator.

``raw_mean`` -- the paper's Mean as it appears to have been run: per modality, the mean of
the raw patch embeddings of all the patient's files of that modality (no graph, no encoder,
no training), the modalities' means concatenated. Every outer fold gets the same vectors;
a patient without a modality gets the mean vector of the fold's *training* patients that have
it, and when some patient lacks a modality a presence column (1 / 0) per modality is
appended. The downstream protocol then screens, scales and fits on them like on any
aggregator's embeddings.

The run directory has what :func:`radiopath.evaluation.evaluate_run` reads: ``run.json``
(``aggregator: raw_mean``), ``folds.csv`` and ``embeddings/fold_<k>.npz`` (no risk and no
importance maps: nothing is trained).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from radiopath.config import RunRecord
from radiopath.errors import RadiopathInputError
from radiopath.io import (
    Cohort,
    FoldEmbeddings,
    load_patient_bags,
    read_cohort,
    write_fold_embeddings,
)
from radiopath.runkit import run_ledger
from radiopath.training.folds import check_folds, make_folds, read_folds, write_folds

log = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("raw_mean",)
"""Aggregators that need no training (selectable in the benchmark like any aggregator)."""

IMAGING = ("wsi", "ct")


def raw_mean_vectors(
    cohort: Cohort, modalities: Sequence[str], *, strict: bool = False, progress: bool = False
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Per modality, each patient's mean of the raw patch embeddings of all its files.

    Returns the patients that have at least one of ``modalities`` and ``{modality: [n, d]}``
    (float64; NaN rows for a patient without that modality).
    """
    means: dict[str, dict[str, np.ndarray]] = {m: {} for m in modalities}
    for p in tqdm(cohort.patients, desc="raw_mean", unit="patient", disable=not progress):
        for m in modalities:
            if not p.files.get(m):
                continue
            try:
                bags = load_patient_bags(p, m)
            except RadiopathInputError as exc:
                if strict:
                    raise
                log.warning("%s; treated as missing this modality", exc)
                continue
            features = np.concatenate([np.asarray(b.features, dtype=np.float64) for b in bags])
            means[m][p.patient_id] = features.mean(axis=0)
    ids = [
        p.patient_id for p in cohort.patients if any(p.patient_id in means[m] for m in modalities)
    ]
    vectors = {}
    for m in modalities:
        if not means[m]:
            raise RadiopathInputError(
                f"modality {m!r} was asked for but no patient has a readable file of it",
                path=cohort.path,
                field=m,
            )
        dims = {v.shape[0] for v in means[m].values()}
        if len(dims) > 1:
            raise RadiopathInputError(
                f"the {m} embedding files have different widths {sorted(dims)}",
                path=cohort.path,
                field=m,
            )
        out = np.full((len(ids), dims.pop()), np.nan)
        for i, pid in enumerate(ids):
            if pid in means[m]:
                out[i] = means[m][pid]
        vectors[m] = out
    return ids, vectors


def _fold_matrix(vectors: dict[str, np.ndarray], train: np.ndarray, indicator: bool) -> np.ndarray:
    """Concatenated modality means; missing ones imputed by the training patients' mean."""
    parts, present = [], []
    for m, v in vectors.items():
        have = ~np.isnan(v).any(1)
        if not have[train].any():
            raise RadiopathInputError(
                f"no training patient of a fold has the {m} modality", field=m
            )
        filled = np.where(have[:, None], v, v[train & have].mean(axis=0))
        parts.append(filled)
        present.append(have.astype(np.float64)[:, None])
    return np.concatenate(parts + (present if indicator else []), axis=1)


def _resolve(folds, ids, events, n_folds, seed, repeats, out: Path, resume: bool):
    existing = out / "folds.csv"
    if folds is None:
        if resume and existing.exists():
            return check_folds(read_folds(existing), ids, existing)
        return make_folds(ids, events, n_folds, seed, repeats=repeats)
    table = folds if isinstance(folds, pd.DataFrame) else read_folds(folds)
    listed = set(table["patient_id"].astype(str))
    dropped = [p for p in ids if p not in listed]
    if dropped:
        log.warning(
            "raw_mean: %d patient(s) are not in the folds and are left out (first: %s)",
            len(dropped),
            dropped[:3],
        )
    kept = [p for p in ids if p in listed]
    return check_folds(table, kept, None if isinstance(folds, pd.DataFrame) else folds)


def train_raw_mean(
    cohort_or_csv: Cohort | str | os.PathLike,
    *,
    modalities: Sequence[str] | str,
    out_dir: str | os.PathLike,
    folds: str | os.PathLike | pd.DataFrame | None = None,
    n_folds: int = 5,
    seed: int = 0,
    repeats: int = 1,
    missing_indicator: str | bool = "auto",
    resume: bool = True,
    strict: bool = False,
    progress: bool = True,
) -> Path:
    """Write a ``raw_mean`` run directory: the untrained per-modality means of the raw bags.

    Parameters mirror :func:`radiopath.training.train_cross_validated`; ``folds`` (a file
    or frame, e.g. the benchmark's ``folds.csv``) are reused as given, patients outside them
    left out; otherwise stratified folds are made and written to ``<out>/folds.csv``.
    Returns the run directory.
    """
    modalities = _checked_modalities(modalities, missing_indicator)
    out = Path(out_dir)
    cohort = (
        cohort_or_csv
        if isinstance(cohort_or_csv, Cohort)
        else read_cohort(cohort_or_csv, strict=strict)
    )
    cohort.require_modalities(modalities)
    config = {
        "aggregator": "raw_mean",
        "modalities": modalities,
        "n_folds": n_folds,
        "seed": seed,
        "repeats": repeats,
        "missing_indicator": missing_indicator,
        "cohort": str(cohort.path),
    }
    ledger = run_ledger(out)
    if resume and ledger.finished("raw_mean", config):
        log.info("raw_mean: %s already written; skipped", out)
        return out
    ids, vectors = raw_mean_vectors(cohort, modalities, strict=strict, progress=progress)
    events = [cohort[p].event for p in ids]
    out.mkdir(parents=True, exist_ok=True)
    table = _resolve(folds, ids, events, n_folds, seed, repeats, out, resume)
    write_folds(table, out / "folds.csv")
    keep = np.isin(ids, table["patient_id"].unique())
    ids = [p for p, k in zip(ids, keep) if k]
    vectors = {m: v[keep] for m, v in vectors.items()}
    missing = any(np.isnan(v).any() for v in vectors.values())
    indicator = missing if missing_indicator == "auto" else bool(missing_indicator)
    with RunRecord(out, command="train", config=config, seed=seed) as run:
        width = _write_fold_embeddings(out, cohort, table, ids, vectors, indicator)
        run.update(
            results={
                "n_patients": len(ids),
                "width": width,
                "missing_indicator_used": indicator,
            }
        )
    ledger.mark("raw_mean", config, [out / "folds.csv", *sorted(out.glob("embeddings/*.npz"))])
    return out


def _checked_modalities(modalities: Sequence[str] | str, missing_indicator) -> list[str]:
    """``modalities`` as a list (a comma-separated text split), after checking it and
    ``missing_indicator``."""
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    modalities = list(modalities)
    bad = [m for m in modalities if m not in IMAGING]
    if not modalities or bad:
        raise RadiopathInputError(
            f"raw_mean averages imaging modalities {list(IMAGING)}, got {modalities}",
            field="modalities",
        )
    if missing_indicator not in ("auto", True, False):
        raise RadiopathInputError(
            f"must be 'auto', true or false, got {missing_indicator!r}", field="missing_indicator"
        )
    return modalities


def _write_fold_embeddings(
    out: Path,
    cohort: Cohort,
    table: pd.DataFrame,
    ids: list[str],
    vectors: dict[str, np.ndarray],
    indicator: bool,
) -> int:
    """Write ``embeddings/fold_<k>.npz`` for every fold of ``table`` (training patients
    first); returns the width of the embeddings."""
    time = np.array([cohort[p].time for p in ids], dtype=np.float64)
    event = np.array([cohort[p].event for p in ids], dtype=np.int64)
    id_array = np.array(ids)
    for k, part in table.groupby("fold", sort=True):
        test = np.isin(id_array, part["patient_id"])
        X = _fold_matrix(vectors, ~test, indicator)
        order = np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)])
        write_fold_embeddings(
            out / "embeddings" / f"fold_{int(k)}.npz",
            FoldEmbeddings(
                fold=int(k),
                patient_id=id_array[order],
                split=np.where(test[order], "test", "train"),
                time=time[order],
                event=event[order],
                embedding=X[order],
            ),
        )
    return int(X.shape[1])
