"""evaluate_run() (radiopath/evaluation/report.py) and `radiopath evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from radiopath.cli import main
from radiopath.config import RunRecord
from radiopath.evaluation import evaluate_run
from radiopath.io import write_fold_embeddings


@pytest.fixture()
def run_dir(tmp_path, small_folds):
    """A training run directory as radiopath.training writes it."""
    folds, _ = small_folds
    out = tmp_path / "run"
    with RunRecord(
        out,
        command="train",
        config={"aggregator": "sparra", "modalities": ["wsi", "ct"], "train": {"epochs": 2}},
        seed=0,
    ) as run:
        for f in folds:
            write_fold_embeddings(out / "embeddings" / f"fold_{f.fold}.npz", f)
        run.update(folds=len(folds))
    return out


def test_evaluate_run_writes_outputs_and_keeps_training_record(run_dir, fast_config):
    res = evaluate_run(
        run_dir, models=["coxph", "fsvm"], backend="torch", config=fast_config, device="cpu"
    )
    for name in (
        "predictions.csv",
        "metrics.csv",
        "selection.csv",
        "summary.md",
        "figures/km_sparra_coxph.png",
        "figures/km_sparra_fsvm.png",
    ):
        assert (run_dir / name).exists(), name
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert list(metrics.columns[:6]) == [
        "aggregator",
        "modalities",
        "model",
        "fold",
        "metric",
        "value",
    ]
    assert set(metrics["aggregator"]) == {"sparra"} and set(metrics["modalities"]) == {"wsi+ct"}
    np.testing.assert_allclose(metrics["value"], res.metrics["value"])
    pred = pd.read_csv(run_dir / "predictions.csv", dtype={"patient_id": str})
    assert list(pred.columns) == [
        "aggregator",
        "modalities",
        "model",
        "fold",
        "patient_id",
        "time",
        "event",
        "risk",
    ]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["command"] == "train" and record["folds"] == 3  # training's record is kept
    assert record["evaluation"]["status"] == "finished"
    assert record["evaluation"]["settings"]["backend"] == "torch"
    assert "figures/km_sparra_coxph.png" in record["evaluation"]["outputs"]
    assert (run_dir / "summary.md").read_text().startswith("# Downstream survival evaluation")
    # a second call with the same settings reads the finished evaluation back
    mtime = (run_dir / "metrics.csv").stat().st_mtime_ns
    again = evaluate_run(
        run_dir, models=["coxph", "fsvm"], backend="torch", config=fast_config, device="cpu"
    )
    assert (run_dir / "metrics.csv").stat().st_mtime_ns == mtime
    np.testing.assert_allclose(again.metrics["value"], res.metrics["value"])


def test_cli_evaluate(run_dir, tmp_path, fast_config):
    cfg = tmp_path / "eval.json"
    cfg.write_text(json.dumps({"evaluation": fast_config}))
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--run",
            str(run_dir),
            "--models",
            "coxnet",
            "--backend",
            "torch",
            "--device",
            "cpu",
            "--config",
            str(cfg),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| sparra | C-index |" in result.output
    assert set(pd.read_csv(run_dir / "metrics.csv")["model"]) == {"coxnet"}


def test_cli_evaluate_bad_run_names_the_file(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path)])
    assert result.exit_code == 2
    assert "run.json" in result.output and str(tmp_path) in result.output
    (tmp_path / "run.json").write_text(
        json.dumps({"config": {"aggregator": "mean", "modalities": ["wsi"]}})
    )
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path)])
    assert result.exit_code == 2 and "fold_<k>.npz" in result.output
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path), "--models", "cox"])
    assert result.exit_code == 2
