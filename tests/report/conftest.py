"""A run folder written straight from random numbers, shaped as a benchmark leaves it
(metrics, predictions, selection, survival, folds, importance maps, run.json, stages.json),
so the report can be tested in seconds without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

AGGREGATORS = ["sparra", "abmil", "mean"]
MODELS = ["rsf", "coxph", "coxnet", "fsvm"]
SURVIVAL_MODELS = ["rsf", "coxph", "coxnet"]


def _patients(n: int, folds: int, rng) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "time": np.round(rng.exponential(400.0, n) + 5.0, 2),
            "event": (rng.random(n) < 0.7).astype(int),
            "fold": np.arange(n) % folds,
        }
    )


def _metrics(rng, folds: int, config_shift: float) -> pd.DataFrame:
    rows = []
    for a, base in zip(AGGREGATORS, (0.66, 0.60, 0.55)):
        for m in MODELS:
            for f in range(folds):
                for metric in ("c_index", "c_ipcw", "c_auc", "ibs"):
                    if metric == "ibs" and m not in SURVIVAL_MODELS:
                        continue
                    centre = 0.2 if metric == "ibs" else base + config_shift
                    value = float(np.round(centre + rng.normal(0, 0.03), 6))
                    rows.append(
                        {
                            "aggregator": a,
                            "modalities": "wsi+ct",
                            "model": m,
                            "fold": f,
                            "metric": metric,
                            "value": value,
                            "status": "ok",
                            "message": "",
                        }
                    )
    return pd.DataFrame(rows)


def _predictions(patients: pd.DataFrame, rng) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    preds, surv, sel = [], [], []
    grid = {f: np.quantile(patients.time, [0.1, 0.3, 0.5, 0.7]) for f in patients.fold.unique()}
    for a in AGGREGATORS:
        for m in MODELS:
            risk = -np.log(patients.time.to_numpy()) + rng.normal(0, 1.0, len(patients))
            preds.append(patients.assign(aggregator=a, modalities="wsi+ct", model=m, risk=risk))
            for f, times in grid.items():
                part = patients[patients.fold == f]
                sel.append(
                    {
                        "aggregator": a,
                        "modalities": "wsi+ct",
                        "model": m,
                        "fold": int(f),
                        "status": "ok",
                        "message": "",
                        "train_risk_mean": float(risk[patients.fold != f].mean()),
                        "train_risk_median": float(np.median(risk[patients.fold != f])),
                    }
                )
                if m not in SURVIVAL_MODELS:
                    continue
                for t in times:
                    s = np.exp(-t / 400.0 * np.exp(risk[part.index] - risk.mean()))
                    surv.append(
                        part[["patient_id"]].assign(
                            aggregator=a, modalities="wsi+ct", model=m, fold=f, t=t, survival=s
                        )
                    )
    columns = ["aggregator", "modalities", "model", "fold", "patient_id", "time", "event", "risk"]
    return (
        pd.concat(preds, ignore_index=True)[columns],
        pd.concat(surv, ignore_index=True),
        pd.DataFrame(sel),
    )


def _importance(root: Path, patient_ids, rng) -> None:
    yy, xx = np.mgrid[0:12, 0:10]
    disk = (yy - 6) ** 2 + (xx - 5) ** 2 < 30
    wsi = np.column_stack([xx[disk] * 256, yy[disk] * 256])
    zz, yy3, xx3 = np.mgrid[0:5, 0:6, 0:6]
    ct = np.column_stack([xx3.ravel() * 16, yy3.ravel() * 16, zz.ravel() * 16])
    for a in AGGREGATORS:
        (root / a).mkdir(parents=True, exist_ok=True)
        for pid in patient_ids:
            for name, coords in (("wsi", wsi), ("ct", ct)):
                table = pd.DataFrame(coords, columns=["x", "y", "z"][: coords.shape[1]])
                table["importance"] = rng.random(len(coords)) / len(coords)
                table.to_csv(root / a / f"{pid}.{name}.csv", index=False)


def make_run(out: Path, *, n: int = 30, folds: int = 3, seed: int = 0, shift: float = 0.0) -> Path:
    """A fake benchmark run folder at ``out`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    patients = _patients(n, folds, rng)
    _metrics(rng, folds, shift).to_csv(out / "metrics.csv", index=False)
    preds, surv, sel = _predictions(patients, rng)
    preds.to_csv(out / "predictions.csv", index=False)
    surv.to_csv(out / "survival.csv", index=False)
    sel.to_csv(out / "selection.csv", index=False)
    patients.assign(repeat=0)[["patient_id", "repeat", "fold"]].to_csv(
        out / "folds.csv", index=False
    )
    _importance(out / "importance", patients.patient_id, rng)
    config = {
        "seed": seed,
        "folds": folds,
        "aggregators": AGGREGATORS,
        "train": {"epochs": 2, "lr": 0.001 * (1 + shift)},
        "statistics": {"bootstrap": 40, "alpha": 0.05, "seed": 0},
    }
    record = {
        "command": "benchmark",
        "argv": ["radiopath", "benchmark"],
        "config": config,
        "seed": seed,
        "versions": {"python": "3.11", "radiopath": "0.1.0"},
        "git_commit": "0123456789abcdef",
        "status": "finished",
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-01T00:01:00+00:00",
        "skipped": ["P999 wsi: file not found: P999.wsi.h5"],
    }
    (out / "run.json").write_text(json.dumps(record))
    stages = {"graphs": {"config": "x", "outputs": {}, "seconds": 1.5}}
    (out / "stages.json").write_text(json.dumps(stages))
    return out


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("report") / "run")


@pytest.fixture
def run_factory():
    """:func:`make_run`, for tests that need several runs."""
    return make_run
