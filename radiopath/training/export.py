"""What a trained fold leaves behind, and the run-level tables gathered from the folds.

* :func:`export_fold` -- a fold's embeddings (train and test patients), its test patients'
  importance maps, risk offsets and fusion weights;
* :func:`fold_exports` / :func:`fold_unit_config` / :func:`finished_fold` -- the files and
  the configuration a fold's record in the run's ledger (:func:`radiopath.runkit.run_ledger`,
  ``checkpoints/fold_<k>.done.json``) checks, and whether a fold finished with the same
  configuration and them intact (skipped on resume);
* :func:`collect_risks`, :func:`merge_risk_offsets`, :func:`merge_fusion_weights`,
  :func:`finish_run` -- the run's ``risks.csv``, ``importance/<aggregator>.risk_offsets.csv``,
  ``fusion_weights.csv`` and ``run.json`` results.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.config import RunRecord
from radiopath.io import FoldEmbeddings, read_fold_embeddings, write_fold_embeddings
from radiopath.models.multimodal import CLINICAL
from radiopath.runkit import run_ledger, write_columns_csv, write_csv
from radiopath.training.config import TrainingConfig
from radiopath.training.data import GraphStore, PatientRecord, patch_importance
from radiopath.training.predict import c_index, predict

log = logging.getLogger(__name__)


def modalities_label(modalities: Sequence[str]) -> str:
    """How ``risks.csv`` names a modality set: ``"wsi+ct"``."""
    return "+".join(modalities)


def _fold_offsets_path(out_dir: Path, fold: int) -> Path:
    return out_dir / "checkpoints" / f"fold_{fold}.risk_offsets.csv"


def _fold_fusion_path(out_dir: Path, fold: int) -> Path:
    return out_dir / "checkpoints" / f"fold_{fold}.fusion_weights.csv"


def _gather_fold_tables(paths: Sequence[Path], target: Path) -> None:
    """The folds' own tables (those that exist) as one, sorted by fold and patient, written
    again on every run, so a damaged copy never survives a resume."""
    parts = [pd.read_csv(p, dtype={"patient_id": str}) for p in paths if p.is_file()]
    if parts:
        table = pd.concat(parts, ignore_index=True).sort_values(["fold", "patient_id"])
        write_csv(table, target)


def merge_fusion_weights(out_dir: Path, folds: Sequence[int]) -> None:
    """``fusion_weights.csv``: ``patient_id, fold, weight_<modality>...``, each test
    patient's modality weights (``mean`` / ``attention`` fusion), gathered from the folds."""
    paths = [_fold_fusion_path(out_dir, k) for k in folds]
    _gather_fold_tables(paths, out_dir / "fusion_weights.csv")


def merge_risk_offsets(out_dir: Path, aggregator: str, folds: Sequence[int]) -> None:
    """``importance/<aggregator>.risk_offsets.csv``: ``patient_id, fold, risk, risk_offset`` of
    every test patient (a patient's risk is the sum of its patches' ``contribution`` plus
    ``risk_offset``), gathered from the folds' own files (checksummed with each fold's
    exports)."""
    paths = [_fold_offsets_path(out_dir, k) for k in folds]
    _gather_fold_tables(paths, out_dir / "importance" / f"{aggregator}.risk_offsets.csv")


def export_fold(
    model,
    fold: int,
    train: Sequence[PatientRecord],
    test: Sequence[PatientRecord],
    store: GraphStore,
    cfg: TrainingConfig,
    out_dir: Path,
    device,
    write_importance: bool = True,
) -> float:
    """Write the fold's embeddings and its test patients' importance maps; return test C-index.

    ``write_importance=False`` (folds of repeats after the first) skips tracing the maps.
    """
    amp = bool(cfg.amp) and device.type == "cuda"
    records = list(train) + list(test)
    threads = cfg.num_threads
    known = getattr(model, "training_prediction", None)  # an ensemble's, from its members
    if known is not None and known[0] == tuple(r.patient_id for r in train):
        _, risk, embedding = known
    else:
        risk, embedding, _ = predict(
            model, train, store, device, cfg.batch_size, amp, num_threads=threads
        )
    t_risk, t_embedding, weights, t_fusion = predict(
        model,
        test,
        store,
        device,
        cfg.batch_size,
        amp,
        node_weights=write_importance,
        num_threads=threads,
        fusion_weights=True,
    )
    if cfg.fusion != "concat":
        table = pd.DataFrame(t_fusion, columns=[f"weight_{m}" for m in model.modalities])
        table.insert(0, "fold", fold)
        table.insert(0, "patient_id", [r.patient_id for r in test])
        write_csv(table, _fold_fusion_path(out_dir, fold))
    test_risk = dict(zip((r.patient_id for r in test), t_risk))
    offsets = {}
    for (pid, m), node in weights.items():
        extra = {k: v for k, v in node.columns.items() if k != "importance"}
        cols = patch_importance(store.get(pid, m), node.importance, extra)
        write_columns_csv(cols, out_dir / "importance" / cfg.aggregator / f"{pid}.{m}.csv")
        offsets[pid] = {
            "patient_id": pid,
            "fold": fold,
            "risk": test_risk[pid],
            "risk_offset": node.risk_offset,
        }
    if offsets:
        write_csv(
            pd.DataFrame(list(offsets.values())).sort_values("patient_id"),
            _fold_offsets_path(out_dir, fold),
        )
    write_fold_embeddings(
        out_dir / "embeddings" / f"fold_{fold}.npz",
        FoldEmbeddings(
            fold=fold,
            patient_id=np.array([r.patient_id for r in records]),
            split=np.array(["train"] * len(train) + ["test"] * len(test)),
            time=np.array([r.time for r in records], dtype=np.float64),
            event=np.array([r.event for r in records], dtype=np.int64),
            embedding=np.concatenate([embedding, t_embedding]),
            risk=np.concatenate([risk, t_risk]),
        ),
    )
    return c_index([r.time for r in test], [r.event for r in test], t_risk)


def fold_exports(fold: int, aggregator: str, test, modalities) -> list[str]:
    """The files a fold's export may write on its own (relative to the run folder): its
    embeddings and its test patients' importance maps (a repeat after the first writes no
    maps; :func:`radiopath.runkit.digests` keeps those that exist)."""
    files = [
        f"embeddings/fold_{fold}.npz",
        f"checkpoints/fold_{fold}.risk_offsets.csv",
        f"checkpoints/fold_{fold}.fusion_weights.csv",
    ]
    files += [
        f"importance/{aggregator}/{r.patient_id}.{m}.csv"
        for r in test
        for m in modalities
        if m != CLINICAL
    ]
    return files


def fold_unit_config(cfg: TrainingConfig) -> dict:
    """What a finished fold must match: the checkpoint's fingerprint (the settings that
    change what is learnt) and the importance mode its exports were traced with (another
    mode re-exports the finished model from its checkpoint, without retraining)."""
    return {
        "model": cfg.fingerprint(),
        "importance": cfg.importance,
    }


def finished_fold(out: Path, k: int, cfg: TrainingConfig) -> float | None:
    """The test C-index of a fold that finished with this configuration and intact exports,
    or None when the fold must run (again)."""
    ledger = run_ledger(out)
    if not ledger.finished(f"fold_{k}", fold_unit_config(cfg)):
        return None
    log.info("fold %d already finished; skipped", k)
    return ledger.record(f"fold_{k}")["test_c_index"]


def collect_risks(
    out_dir: Path, folds: Sequence[int], aggregator: str, modalities, repeat_of=None
) -> pd.DataFrame:
    """Test-fold risks of every fold, from ``embeddings/fold_<k>.npz``."""
    frames = []
    repeat_of = repeat_of or {}
    for k in folds:
        emb = read_fold_embeddings(out_dir / "embeddings" / f"fold_{k}.npz").part("test")
        frames.append(
            pd.DataFrame(
                {
                    "aggregator": aggregator,
                    "modalities": modalities_label(modalities),
                    "repeat": repeat_of.get(k, 0),
                    "fold": k,
                    "patient_id": emb.patient_id,
                    "time": emb.time,
                    "event": emb.event,
                    "risk": emb.risk,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def finish_run(
    run: RunRecord, out: Path, fold_ids, cfg: TrainingConfig, repeat_of, fold_c
) -> pd.DataFrame:
    """``risks.csv`` from the folds' embeddings, and the fold C-indices in ``run.json``."""
    risks = collect_risks(out, fold_ids, cfg.aggregator, cfg.modalities, repeat_of)
    write_csv(risks, out / "risks.csv")
    run.update(
        results={
            "fold_c_index": fold_c,
            "mean_c_index": float(np.nanmean(list(fold_c.values()))),
        }
    )
    return risks
