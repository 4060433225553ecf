"""summarize(), Kaplan-Meier risk groups, evaluate_run() and `radiopath evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test

from radiopath.cli import main
from radiopath.config import RunRecord
from radiopath.evaluation import evaluate_run, km_risk_groups, summarize
from radiopath.evaluation.report import studies
from radiopath.io import write_fold_embeddings


def _metrics_frame(means: dict, n_folds: int = 5, sd: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Fold values with exactly the given mean per (aggregator, model, metric)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (agg, model, metric), mean in means.items():
        dev = rng.normal(size=n_folds)
        dev = (dev - dev.mean()) / dev.std(ddof=1) * sd
        for f in range(n_folds):
            rows.append(
                {
                    "aggregator": agg,
                    "modalities": "wsi+ct",
                    "model": model,
                    "fold": f,
                    "metric": metric,
                    "value": mean + dev[f],
                    "status": "ok",
                    "message": "",
                }
            )
    return pd.DataFrame(rows)


def _all_studies(agg_quality: dict) -> dict:
    means = {}
    for agg, q in agg_quality.items():
        for model in ("rsf", "coxph", "coxnet", "fsvm"):
            for metric in ("c_index", "c_ipcw", "c_auc"):
                means[(agg, model, metric)] = 0.6 + q
            if model != "fsvm":
                means[(agg, model, "ibs")] = 0.25 - q
    return means


def test_nineteen_studies():
    assert len(studies(["rsf", "coxph", "coxnet", "fsvm"])) == 19
    assert len(studies(["coxph", "fsvm"])) == 2 * 3 + 1 + 4


def test_summary_table_averages_and_wins():
    means = _all_studies({"mean": 0.0, "abmil": 0.01, "sparra": 0.05})
    # mean wins CoxPH C-IPCW and, through it, the average C-IPCW (0.675 > 0.65)
    means[("mean", "coxph", "c_ipcw")] = 0.9
    text = summarize(_metrics_frame(means))
    assert "**sparra** best in 17 of 19 studies" in text
    assert (
        "| sparra | 17 of 19 |" in text
        and "| mean | 2 of 19 |" in text
        and "| abmil | 0 of 19 |" in text
    )
    # C-IPCW average of mean: (0.6 + 0.9 + 0.6 + 0.6) / 4, with the paper's sd (mean of the sds)
    row = next(line for line in text.splitlines() if line.startswith("| mean | C-IPCW"))
    assert row.split("|")[-2].strip() == "**0.675 (0.020)**"  # and it is the best average
    assert "**0.900 (0.020)**" in row
    # IBS: lower is better, sparra's is bold, FSVM has none
    ibs = next(line for line in text.splitlines() if line.startswith("| sparra | IBS"))
    assert "**0.200 (0.020)**" in ibs and "n/a" in ibs


def test_summary_counts_failed_folds_and_several_modality_sets():
    means = _all_studies({"mean": 0.0, "sparra": 0.05})
    a = _metrics_frame(means)
    b = _metrics_frame(means).assign(modalities="wsi")
    a.loc[
        (a["aggregator"] == "sparra") & (a["model"] == "rsf") & (a["fold"] == 2),
        ["value", "status", "message"],
    ] = (np.nan, "failed", "weights too large")
    text = summarize(pd.concat([a, b]))
    assert "## Modalities: wsi+ct" in text and "## Modalities: wsi" in text
    assert "[4/5 folds]" in text
    assert "sparra / wsi+ct / rsf / fold 2" in text and "weights too large" in text
    with pytest.raises(ValueError, match="metric"):
        summarize(a.drop(columns=["metric"]))


def test_km_risk_groups_match_lifelines():
    rng = np.random.default_rng(0)
    train_risk = rng.normal(size=100)
    test_risk = rng.normal(size=60)
    time = rng.exponential(np.exp(-test_risk))
    event = rng.random(60) < 0.8
    groups, p = km_risk_groups(train_risk, test_risk, time, event, split="mean")
    high = test_risk > train_risk.mean()
    np.testing.assert_array_equal(groups.high, high)
    ref = logrank_test(time[high], time[~high], event[high], event[~high]).p_value
    assert p == pytest.approx(ref, rel=1e-12) and p < 0.05  # the planted risk separates
    km = KaplanMeierFitter().fit(time[high], event[high])
    np.testing.assert_allclose(
        groups.km_high.survival_function_.to_numpy(), km.survival_function_.to_numpy()
    )
    groups, _ = km_risk_groups(train_risk, test_risk, time, event, split="median")
    np.testing.assert_array_equal(groups.high, test_risk > np.median(train_risk))
    fig = groups.plot()
    assert "log-rank p" in fig.axes[0].get_title()
    _, p = km_risk_groups(train_risk, test_risk + 100, time, event)
    assert np.isnan(p)  # one empty group: no test


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
