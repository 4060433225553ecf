"""The benchmark: bad flags refused up front, resumption reproduces an uninterrupted run, and the
report's numbers are the metrics on disk."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from radiopath.benchmark import run_benchmark
from radiopath.cli import main
from radiopath.errors import RadiopathInputError
from radiopath.report import fold_statistics, write_report
from radiopath.sweep import load_experiment, run_sweep, set_dotted

FAST = {
    "aggregators": ["sparra", "mean"],
    "models": ["coxph", "fsvm"],
    "folds": 3,
    "train": {"epochs": 2, "batch_size": 8},
    "evaluation": {"backend": "torch", "cv": {"n_splits": 3}},
}


class Killed(RuntimeError):
    pass


def test_bad_flags_fail_before_any_work(small_cohort, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RadiopathInputError, match="unknown aggregator 'maxpool'"):
        run_benchmark(
            small_cohort, out, {**FAST, "aggregators": ["sparra", "maxpool"]}, progress=False
        )
    with pytest.raises(RadiopathInputError, match="unknown model 'deepsurv'"):
        run_benchmark(small_cohort, out, {**FAST, "models": ["deepsurv"]}, progress=False)
    with pytest.raises(RadiopathInputError, match="unknown modality 'pet'"):
        run_benchmark(small_cohort, out, {**FAST, "modalities": ["pet"]}, progress=False)
    assert not out.exists()


def test_absent_modality_is_refused(small_cohort, tmp_path):
    table = pd.read_csv(small_cohort)
    table["ct"] = ""
    csv = small_cohort.parent / "no_ct.csv"
    table.to_csv(csv, index=False)
    result = CliRunner().invoke(
        main,
        ["benchmark", "--cohort", str(csv), "--out", str(tmp_path / "r"), "--modalities", "wsi,ct"],
    )
    assert result.exit_code == 2
    assert "modality 'ct' was asked for but no patient has it" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_resumed_run_equals_uninterrupted_and_report_matches(small_cohort, tmp_path):
    whole = run_benchmark(small_cohort, tmp_path / "whole", FAST, progress=False)

    def kill_after_first_training(stage):
        if stage == "evaluate:sparra":
            raise Killed(stage)

    with pytest.raises(Killed):
        run_benchmark(
            small_cohort,
            tmp_path / "resumed",
            FAST,
            progress=False,
            stage_hook=kill_after_first_training,
        )
    assert not (tmp_path / "resumed" / "metrics.csv").exists()
    done = []
    resumed = run_benchmark(
        small_cohort, tmp_path / "resumed", FAST, progress=False, stage_hook=done.append
    )
    assert "train:sparra" not in done and "graphs" not in done  # finished work is not redone
    assert done == ["train:mean", "evaluate:mean", "report"]
    key = ["aggregator", "model", "fold", "metric"]
    a = whole.metrics.sort_values(key).reset_index(drop=True)
    b = resumed.metrics.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)

    # The report is a recomputation of metrics.csv.
    out = tmp_path / "whole"
    metrics = pd.read_csv(out / "metrics.csv")
    stats = fold_statistics(metrics)
    for (agg, model, metric), part in metrics.dropna(subset=["value"]).groupby(
        ["aggregator", "model", "metric"]
    ):
        row = stats[(stats.aggregator == agg) & (stats.model == model) & (stats.metric == metric)]
        assert row["mean"].item() == pytest.approx(part.value.mean())
        assert row["sd"].item() == pytest.approx(part.value.std())
    summary = (out / "summary.md").read_text()
    c_index = metrics[(metrics.metric == "c_index") & (metrics.aggregator == "sparra")]
    for _model, part in c_index.groupby("model"):
        assert f"{part.value.mean():.3f} ({part.value.std():.3f})" in summary
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 2
    assert (out / "figures" / "metrics.png").exists()
    # Every test patient has a prediction in every fold's model; importance reaches every patch.
    preds = pd.read_csv(out / "predictions.csv")
    assert set(preds.aggregator) == {"sparra", "mean"}
    assert preds.groupby(["aggregator", "model"]).patient_id.nunique().eq(24).all()
    imp = pd.read_csv(next((out / "importance" / "sparra").glob("*.wsi.csv")))
    assert {"x", "y", "importance"} <= set(imp.columns) and np.isfinite(imp.importance).all()


def test_report_rejects_a_run_without_metrics(tmp_path):
    with pytest.raises(RadiopathInputError, match="no metrics.csv"):
        write_report(tmp_path)


def test_experiment_files_load_and_expand():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    files = sorted(root.glob("*.yaml"))
    assert {"radiology.yaml", "pathology.yaml", "radiopathomics.yaml"} <= {f.name for f in files}
    for f in files:
        exp = load_experiment(f)
        assert exp.points()
    prior = load_experiment(root / "ablation-prior.yaml")
    assert len(prior.points()) == 9  # one at a time: 3 keys x 3 values
    assert set_dotted({"train": {"sparra": {"tau": 1}}}, "train.sparra.alpha0", 5.0) == {
        "train": {"sparra": {"tau": 1, "alpha0": 5.0}}
    }


@pytest.mark.slow
def test_sweep_gathers_points(small_cohort, tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: t\nbase:\n  aggregators: [mean]\n  models: [coxph]\n  folds: 3\n"
        "  train: {epochs: 1, batch_size: 8}\n  evaluation: {backend: torch, cv: {n_splits: 3}}\n"
        "grid:\n  modalities: [[wsi], [ct]]\n"
    )
    gathered = run_sweep(exp, small_cohort, tmp_path / "sweep", progress=False)
    assert set(gathered.modalities) == {"wsi", "ct"}
    assert (tmp_path / "sweep" / "figures" / "ablation_modalities.png").exists()
    saved = pd.read_csv(tmp_path / "sweep" / "sweep_metrics.csv")
    assert len(saved) == len(gathered)


def test_cli_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in (
        "demo",
        "benchmark",
        "extract",
        "graphs",
        "train",
        "evaluate",
        "report",
        "importance",
        "sweep",
    ):
        assert re.search(rf"^\s+{command}\s", result.output, re.M), command


def test_benchmark_takes_a_study_file_but_not_a_grid():
    from pathlib import Path

    from radiopath.benchmark import _benchmark_config_file

    root = Path(__file__).resolve().parents[1] / "experiments"
    study = _benchmark_config_file(root / "radiology.yaml")
    assert study["modalities"] == ["ct"] and study["aggregators"] == ["sparra", "abmil", "mean"]
    with pytest.raises(RadiopathInputError, match="grid.*radiopath sweep"):
        _benchmark_config_file(root / "ablation-topk.yaml")
