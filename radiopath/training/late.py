"""Late fusion: one model per modality on the same folds, their risks combined.

Boeke et al. and MeD-3D combine unimodal models at the level of their predictions. For
``fusion: late`` :func:`train_late_fusion` trains one model per modality (the configured
aggregator, its own folder ``unimodal/<modality>/``) on one shared set of folds, then, per
fold:

1. z-scores each model's risks with the mean and standard deviation of its *training*
   patients' risks (the test fold never sets the scale);
2. combines them with ``late.weights``:

   - ``equal``: the mean of the z-scores a patient has;
   - ``c_index``: a weighted mean, each modality's weight its model's inner-validation
     C-index minus 0.5 (floored at 0; the training fold's own C-index when the recipe holds
     no validation split out; equal weights when every weight is 0);
   - ``cox``: a ridge Cox model (:class:`sksurv.linear_model.CoxPHSurvivalAnalysis`) fitted
     on the training patients' z-scores, a missing modality read as 0 (the training mean).

A patient without some modality is scored from the modalities it has. The run folder has
the layout of any training run (``folds.csv``, ``run.json``, ``risks.csv``,
``embeddings/fold_<k>.npz``: the z-scores, then a presence column per modality when some
patient lacks one), the unimodal models' importance maps under
``importance/<aggregator>/`` and ``late_weights.csv`` (fold, modality, weight).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.config import RunRecord
from radiopath.io import Cohort, FoldEmbeddings, read_fold_embeddings, write_fold_embeddings
from radiopath.runkit import run_ledger, write_csv
from radiopath.training.config import TrainingConfig
from radiopath.training.folds import fold_repeats

log = logging.getLogger(__name__)


def _unimodal_config(cfg: TrainingConfig, modality: str) -> TrainingConfig:
    return replace(cfg, fusion="concat", modalities=(modality,))


def train_late_fusion(
    cohort: Cohort,
    graphs_dir,
    cfg: TrainingConfig,
    out: Path,
    folds,
    device: str,
    resume: bool,
    progress: bool,
    repeats: int,
    executor,
    clinical,
):
    """Train one model per modality of ``cfg`` on shared folds and combine their risks (see
    the module docstring); returns a :class:`~radiopath.training.cv.TrainingResult`. The
    arguments are :func:`~radiopath.training.cv.train_cross_validated`'s, resolved."""
    from radiopath.training.cv import (
        TrainingResult,
        _resolve_folds,
        _training_inputs,
        finish_run,
        train_cross_validated,
    )
    from radiopath.training.predict import c_index

    modalities = list(cfg.modalities)
    out.mkdir(parents=True, exist_ok=True)
    # graphs built in memory once, for every unimodal model
    inputs = _training_inputs(cohort, graphs_dir, cfg, progress, clinical)
    table = _resolve_folds(folds, inputs.records, cfg, out, resume, repeats)
    shared = inputs.graphs if graphs_dir is None else graphs_dir
    for m in modalities:
        train_cross_validated(
            cohort,
            shared,
            aggregator=cfg.aggregator,
            modalities=[m],
            out_dir=out / "unimodal" / m,
            config=_unimodal_config(cfg, m),
            folds=out / "folds.csv",
            device=device,
            resume=resume,
            progress=progress,
            repeats=repeats,
            executor=executor,
        )
    repeat_of = fold_repeats(table)
    fold_ids = sorted(repeat_of)
    weights_rows, fold_c = [], {}
    with RunRecord(
        out, command="train", config={**cfg.to_dict(), "cohort": str(cohort.path)}, seed=cfg.seed
    ) as run:
        for k in fold_ids:
            fused, rows = combine_fold(out, k, modalities, cfg.late.weights)
            write_fold_embeddings(out / "embeddings" / f"fold_{k}.npz", fused)
            weights_rows += rows
            test = fused.part("test")
            fold_c[k] = c_index(test.time, test.event, test.risk)
        write_csv(pd.DataFrame(weights_rows), out / "late_weights.csv")
        _gather_importance(out, modalities, cfg.aggregator)
        risks = finish_run(run, out, fold_ids, cfg, repeat_of, fold_c)
    return TrainingResult(out, cfg, table, risks, fold_c)


def _selection_c_index(run_dir: Path, fold: int, emb: FoldEmbeddings) -> float:
    """The C-index a unimodal fold model was selected on: its inner-validation score
    (``done.json``), else its training patients' C-index."""
    from radiopath.training.predict import c_index

    done = run_ledger(run_dir).record(f"fold_{fold}") or {}
    score = done.get("inner_validation_c_index")
    if score is not None and np.isfinite(score):
        return float(score)
    train = emb.part("train")
    return c_index(train.time, train.event, train.risk)


def late_weights(kind: str, scores) -> np.ndarray:
    """Per-modality weights of a fold for ``equal`` (ones) and ``c_index`` (each model's
    selection C-index minus 0.5, floored at 0; ones when every weight is 0). ``cox``
    weights are fitted on the fold's risks instead (:func:`combine_fold`)."""
    scores = np.asarray(scores, float)
    if kind == "equal":
        return np.ones_like(scores)
    w = np.clip(scores - 0.5, 0.0, None)
    w = np.where(np.isfinite(w), w, 0.0)
    return w if w.sum() > 0 else np.ones_like(w)


def _weighted_mean(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    present = np.isfinite(z)
    num = np.where(present, z, 0.0) @ w
    den = present.astype(float) @ w
    # a patient whose modalities all have weight 0 gets the plain mean of what it has
    plain = np.nanmean(np.where(present, z, np.nan), 1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), plain)


def combine_fold(out: Path, fold: int, modalities, kind: str) -> tuple[FoldEmbeddings, list]:
    """One fold's fused embeddings and risks from the unimodal runs under ``out/unimodal``."""
    parts = {
        m: read_fold_embeddings(out / "unimodal" / m / "embeddings" / f"fold_{fold}.npz")
        for m in modalities
    }
    split_of, time_of, event_of = {}, {}, {}
    for emb in parts.values():
        for pid, split, t, e in zip(emb.patient_id, emb.split, emb.time, emb.event):
            split_of[str(pid)], time_of[str(pid)], event_of[str(pid)] = str(split), t, e
    ids = sorted(split_of, key=lambda p: (split_of[p] != "train", p))
    z = np.full((len(ids), len(modalities)), np.nan)
    row = {p: i for i, p in enumerate(ids)}
    scores = []
    for j, m in enumerate(modalities):
        emb = parts[m]
        train = emb.split == "train"
        mu, sd = emb.risk[train].mean(), emb.risk[train].std()
        idx = [row[str(p)] for p in emb.patient_id]
        z[idx, j] = (emb.risk - mu) / (sd if sd > 0 else 1.0)
        scores.append(_selection_c_index(out / "unimodal" / m, fold, emb))
    split = np.array([split_of[p] for p in ids])
    time = np.array([time_of[p] for p in ids], dtype=np.float64)
    event = np.array([event_of[p] for p in ids], dtype=np.int64)
    is_train = split == "train"
    if kind == "cox":
        w = _cox_weights(np.nan_to_num(z[is_train]), time[is_train], event[is_train])
        risk = np.nan_to_num(z) @ w
    else:
        w = late_weights(kind, scores)
        risk = _weighted_mean(z, w)
    present = np.isfinite(z)
    embedding = np.nan_to_num(z)
    if not present.all():
        embedding = np.concatenate([embedding, present.astype(float)], 1)
    rows = [
        {"fold": fold, "modality": m, "weight": float(w[j]), "selection_c_index": scores[j]}
        for j, m in enumerate(modalities)
    ]
    fused = FoldEmbeddings(
        fold=fold,
        patient_id=np.array(ids),
        split=split,
        time=time,
        event=event,
        embedding=embedding.astype(np.float32),
        risk=risk.astype(np.float64),
    )
    return fused, rows


def _cox_weights(z: np.ndarray, time, event) -> np.ndarray:
    """Coefficients of a ridge Cox model of the training fold's z-scored risks."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    model = CoxPHSurvivalAnalysis(alpha=1.0)
    model.fit(z, Surv.from_arrays(np.asarray(event, bool), np.asarray(time, float)))
    return np.asarray(model.coef_, dtype=np.float64)


def _gather_importance(out: Path, modalities, aggregator: str) -> None:
    """The unimodal models' importance maps, in this run's ``importance/<aggregator>/``."""
    target = out / "importance" / aggregator
    for m in modalities:
        source = out / "unimodal" / m / "importance" / aggregator
        if not source.is_dir():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for f in source.glob(f"*.{m}.csv"):
            shutil.copyfile(f, target / f.name)
