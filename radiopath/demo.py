"""The demo: the whole pipeline on the embedded synthetic cohort, and whether it finds the signal.

The synthetic cohort (:mod:`radiopath.datasets`) plants its prognostic signal in a few
contiguous regions per bag and keeps the planted masks as ground truth, so besides the
usual survival metrics the demo can say how well each aggregator's patch importance
recovers the planted regions (ROC AUC of importance against the mask; 0.5 = chance, which
is what uniform mean-pooling weights give).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.datasets import SyntheticConfig, load_planted_mask, make_synthetic_cohort
from radiopath.errors import RadiopathInputError
from radiopath.runkit import write_csv
from radiopath.runtime import available_cores
from radiopath.viz.importance import planted_importance_auc, read_importance

log = logging.getLogger(__name__)

# Small enough for about five minutes on two CPU cores, large enough for stable folds.
DEMO_COHORT = dict(
    n_patients=80,
    dim=32,
    wsi_patches=(1000, 2500),
    ct_patches=(500, 1200),
    # a clinical marker and grade with a known, moderate effect (the clinical baselines)
    clinical_effect=0.7,
)
# The demo trains the paper's architecture (graph convolutions + two top-k pooling layers per
# modality) with the default training recipe (the ``learned`` preset,
# radiopath.training.presets: GCN layers with a root weight, ``conv: gcn_root``) on
# the confounded synthetic cohort, where mean pooling cannot see the signal.
# Training (each fold's ensemble members, then the folds) and the evaluation fits run in a
# local pool of one process per core, at most five: a unit's result is the same whichever
# process runs it.
DEMO_BENCHMARK: dict = {
    "aggregators": ["sparra", "abmil", "mean"],
    "models": ["rsf", "coxph", "coxnet", "fsvm"],
    "modalities": ["wsi", "ct"],
    "folds": 5,
    "train": {},
    "evaluation": {"backend": "torch"},
    "executor": {"name": "local", "workers": max(1, min(5, available_cores()))},
}


def importance_recovery(
    run_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    planted: Callable[[str, str], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per aggregator and modality: AUC of patch importance for the planted patches.

    Parameters
    ----------
    run_dir
        A trained run (its ``importance/`` folder).
    cohort_dir
        The synthetic cohort's folder (ground truth under ``truth/``).
    planted
        ``planted(patient_id, modality) -> bool mask`` in patch order; default: the
        embedding cohort's saved masks (:func:`radiopath.datasets.load_planted_mask`).

    Returns one row per (aggregator, modality) with the mean, sd and count over patients
    (patients whose bag has no planted patch are left out).
    """
    if planted is None:

        def planted(patient_id: str, modality: str) -> np.ndarray:
            return load_planted_mask(cohort_dir, patient_id, modality)

    root = Path(run_dir) / "importance"
    if not root.is_dir():
        raise RadiopathInputError("no importance/ folder in the run", path=run_dir)
    rows = []
    for agg_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for csv in sorted(agg_dir.glob("*.csv")):
            patient_id, modality = csv.name[: -len(".csv")].rsplit(".", 1)
            try:
                mask = planted(patient_id, modality)
            except RadiopathInputError:
                continue
            _, values = read_importance(csv)
            _same_length(values, mask, "importance rows", csv, patient_id, modality)
            rows.append(
                {
                    "aggregator": agg_dir.name,
                    "modality": modality,
                    "patient_id": patient_id,
                    "auc": planted_importance_auc(values, mask),
                }
            )
    if not rows:
        raise RadiopathInputError("no importance file matches the ground truth", path=run_dir)
    table = pd.DataFrame(rows).dropna(subset=["auc"])
    return table.groupby(["aggregator", "modality"]).auc.agg(["mean", "std", "count"]).reset_index()


def importance_ceiling(
    graphs_dir: str | os.PathLike,
    cohort_dir: str | os.PathLike,
    planted: Callable[[str, str], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per modality: the planted-patch AUC a map could reach on these graphs at best.

    A node's importance reaches every patch clustered into it, so a map cannot split a
    node's planted patches from its other ones. The best map gives each node its planted
    fraction; this is that map's AUC (mean, sd and count over patients, as
    :func:`importance_recovery`). Well below 1, the clustering mixes the planted region
    with its surroundings and no aggregator's map can be better; near 1, a map's shortfall
    is the model's. ``planted`` as in :func:`importance_recovery`; a graph that cannot be
    read is reported in the log and left out.
    """
    from radiopath.training.data import GraphStore, manifest_source

    if planted is None:

        def planted(patient_id: str, modality: str) -> np.ndarray:
            return load_planted_mask(cohort_dir, patient_id, modality)

    load, available = manifest_source(graphs_dir)
    store = GraphStore(load, cache=False)
    rows = []
    for patient_id, modality in sorted(available):
        try:
            mask = np.asarray(planted(patient_id, modality), dtype=bool)
        except RadiopathInputError:
            continue
        try:
            assignment = store.get(patient_id, modality).assignment.numpy()
        except RadiopathInputError as exc:  # one unreadable graph is reported, not fatal
            log.warning("map ceiling: skipped %s", exc)
            continue
        _same_length(assignment, mask, "patches in the graph", graphs_dir, patient_id, modality)
        n = int(assignment.max()) + 1 if len(assignment) else 0
        fraction = np.bincount(assignment, mask, n) / np.bincount(assignment, minlength=n).clip(1)
        rows.append(
            {
                "modality": modality,
                "patient_id": patient_id,
                "auc": planted_importance_auc(fraction[assignment], mask),
            }
        )
    if not rows:
        raise RadiopathInputError("no graph matches the ground truth", path=graphs_dir)
    table = pd.DataFrame(rows).dropna(subset=["auc"])
    return table.groupby("modality").auc.agg(["mean", "std", "count"]).reset_index()


def _same_length(values, mask, what: str, path, patient_id: str, modality: str) -> None:
    """Refuse a bag whose rows do not match its ground-truth mask, one per patch."""
    if len(values) != len(mask):
        raise RadiopathInputError(
            f"{len(values)} {what} for {len(mask)} patches in the ground truth",
            path=path,
            patient_id=patient_id,
            field=modality,
        )


def _image_mode_cohort(out: Path, n_patients: int | None, seed: int, progress: bool):
    """Synthetic slides and CT scans -> extracted embeddings; the planted masks per patch."""
    from radiopath.extract import extract_cohort
    from radiopath.io import read_cohort, read_embeddings
    from radiopath.synthetic_images import (
        IMAGE_MODE_EXTRACT,
        make_synthetic_image_cohort,
        planted_patch_fraction,
    )

    kw = {"n_patients": n_patients} if n_patients else {}
    images = make_synthetic_image_cohort(out / "images", seed=seed, progress=progress, **kw)
    cohort_csv = extract_cohort(images, out / "embedded", progress=progress, **IMAGE_MODE_EXTRACT)
    cohort = read_cohort(cohort_csv)

    def planted(patient_id: str, modality: str) -> np.ndarray:
        if patient_id not in cohort.patient_ids or not cohort[patient_id].files.get(modality):
            raise RadiopathInputError("no extracted bag", patient_id=patient_id, field=modality)
        bag = read_embeddings(cohort[patient_id].files[modality][0], modality=modality)
        return planted_patch_fraction(images.parent, patient_id, bag) > 0.5

    return cohort_csv, images.parent, planted


def run_demo(
    out_dir: str | os.PathLike,
    *,
    n_patients: int | None = None,
    seed: int = 0,
    config: dict | None = None,
    from_images: bool = False,
    progress: bool = True,
) -> dict:
    """Make the synthetic cohort, run the benchmark on it and draw one patient's maps.

    With ``from_images`` the cohort starts as pixels: small pyramidal TIFF slides and NIfTI
    CT volumes (:mod:`radiopath.synthetic_images`) go through ``extract`` first, and the
    importance is scored against the planted region in the pixels.
    """
    from radiopath.benchmark import run_benchmark
    from radiopath.config import deep_merge
    from radiopath.viz.importance import write_importance_maps

    out = Path(out_dir)
    start = time.perf_counter()
    if from_images:
        cohort_csv, truth_dir, planted = _image_mode_cohort(out, n_patients, seed, progress)
    else:
        cohort_kw = {**DEMO_COHORT, **({"n_patients": n_patients} if n_patients else {})}
        cohort_csv = make_synthetic_cohort(
            out / "cohort", SyntheticConfig(seed=seed, **cohort_kw), progress=progress
        )
        truth_dir, planted = cohort_csv.parent, None
    bench_cfg = deep_merge(deep_merge(DEMO_BENCHMARK, {"seed": seed}), config or {})
    result = run_benchmark(cohort_csv, out, bench_cfg, progress=progress)
    recovery = importance_recovery(out, truth_dir, planted)
    write_csv(recovery, out / "importance_recovery.csv")
    truth = pd.read_csv(truth_dir / "truth.csv", dtype={"patient_id": str})
    # Show the patient with the largest planted WSI area among those with maps.
    shown = truth.sort_values("wsi_planted_fraction", ascending=False).patient_id
    available = {p.name.split(".")[0] for p in (out / "importance").rglob("*.csv")}
    patient = next((p for p in shown if p in available), None)
    maps = write_importance_maps(out, patient) if patient else []
    ceilings_path = truth_dir / "ceilings.json"
    return {
        "summary": result.summary,
        "ceilings": json.loads(ceilings_path.read_text()) if ceilings_path.exists() else None,
        "recovery": recovery,
        "maps": maps,
        "seconds": time.perf_counter() - start,
        "metrics": result.metrics,
    }


def comparison_table(metrics: pd.DataFrame) -> str:
    """Mean over folds of each metric, averaged over the downstream models, per aggregator."""
    sub = metrics.dropna(subset=["value"])
    per_model = sub.groupby(["aggregator", "metric", "model"]).value.mean().reset_index()
    table = per_model.groupby(["aggregator", "metric"]).value.mean().unstack("metric")
    cols = [c for c in ("c_index", "c_ipcw", "c_auc", "ibs") if c in table.columns]
    return table[cols].round(3).to_string()


def describe_recovery(recovery: pd.DataFrame) -> str:
    lines = []
    for (agg, modality), row in recovery.set_index(["aggregator", "modality"]).iterrows():
        lines.append(
            f"  {agg:<8} {modality:<4} AUC {row['mean']:.3f} (sd {np.nan_to_num(row['std']):.3f},"
            f" {int(row['count'])} patients)"
        )
    return "\n".join(lines)


def describe_clinical(run_dir: str | os.PathLike) -> str:
    """The clinical baselines in a few lines: each column's C-index and, per aggregator, the
    likelihood-ratio test of its risk added to the clinical columns (empty without the
    clinical stage's files)."""
    base, cox = Path(run_dir) / "clinical" / "baselines.csv", Path(run_dir) / "clinical" / "cox.csv"
    if not base.exists():
        return ""
    table = pd.read_csv(base)
    lines = [
        "  "
        + ", ".join(
            f"{r.column} {r.c_index:.3f}" for r in table.itertuples() if pd.notna(r.c_index)
        )
    ]
    if cox.exists():
        tests = pd.read_csv(cox).drop_duplicates("aggregator")
        lines += [
            f"  {r.aggregator:<8} risk added to the clinical columns: LR chi2 {r.lr_chi2:.1f}, "
            f"p {r.lr_p:.2g}"
            for r in tests.itertuples()
            if pd.notna(r.lr_p)
        ]
    return "\n".join(lines)
