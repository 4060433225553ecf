"""The benchmark: bad flags refused up front, resumption reproduces an uninterrupted run, and the
report's numbers are the metrics on disk."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from config_checks import FAST, ROOT, empty_or_absent, refused, write_yaml

from radiopath.benchmark import DEFAULTS as BENCHMARK_DEFAULTS
from radiopath.benchmark import build_benchmark_config, run_benchmark
from radiopath.cli import main
from radiopath.config import deep_merge
from radiopath.errors import RadiopathInputError
from radiopath.io import read_cohort
from radiopath.report import fold_statistics, write_report
from radiopath.sweep import load_experiment, set_dotted


class Killed(RuntimeError):
    pass


def test_bad_flags_fail_before_any_work(fast_benchmark, small_cohort, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RadiopathInputError, match="field 'aggregators'.*'maxpool'"):
        run_benchmark(
            small_cohort,
            out,
            {**fast_benchmark, "aggregators": ["sparra", "maxpool"]},
            progress=False,
        )
    with pytest.raises(RadiopathInputError, match="field 'models'.*'deepsurv'"):
        run_benchmark(small_cohort, out, {**fast_benchmark, "models": ["deepsurv"]}, progress=False)
    with pytest.raises(RadiopathInputError, match="field 'modalities'.*'pet'"):
        run_benchmark(small_cohort, out, {**fast_benchmark, "modalities": ["pet"]}, progress=False)
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
def test_resumed_run_equals_uninterrupted_and_report_matches(
    fast_benchmark, small_cohort, tmp_path
):
    whole = run_benchmark(small_cohort, tmp_path / "whole", fast_benchmark, progress=False)

    def kill_after_first_training(stage):
        if stage == "evaluate:sparra":
            raise Killed(stage)

    with pytest.raises(Killed):
        run_benchmark(
            small_cohort,
            tmp_path / "resumed",
            fast_benchmark,
            progress=False,
            stage_hook=kill_after_first_training,
        )
    assert not (tmp_path / "resumed" / "metrics.csv").exists()
    done = []
    resumed = run_benchmark(
        small_cohort, tmp_path / "resumed", fast_benchmark, progress=False, stage_hook=done.append
    )
    assert "train:sparra" not in done and "graphs" not in done  # finished work is not redone
    assert done == ["train:mean", "evaluate:mean", "clinical", "report"]
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

    # A finished run whose files were truncated since: each damaged file is detected by its
    # checksum in stages.json / done.json / run.json and recomputed, never trusted.
    before = (out / "metrics.csv").read_bytes()
    graph = next((out / "graphs").rglob("*.pt"))
    for f in (
        graph,
        out / "runs" / "mean" / "metrics.csv",
        out / "runs" / "sparra" / "embeddings" / "fold_1.npz",
        out / "metrics.csv",
    ):
        f.write_bytes(f.read_bytes()[:50])
    redone = []
    again = run_benchmark(
        small_cohort, out, fast_benchmark, progress=False, stage_hook=redone.append
    )
    assert redone[0] == "graphs" and "report" in redone
    assert (out / "metrics.csv").read_bytes() == before
    pd.testing.assert_frame_equal(again.metrics, whole.metrics)


def test_report_rejects_a_run_without_metrics(tmp_path):
    with pytest.raises(RadiopathInputError, match="no metrics.csv"):
        write_report(tmp_path)


def test_new_keys_are_checked_before_any_work(fast_benchmark, small_cohort, tmp_path):
    out = tmp_path / "run"
    for bad, field in (
        ({"repeats": 0}, "repeats"),
        ({"statistics": {"bootstrap": -1}}, "statistics.bootstrap"),
        ({"statistics": {"level": 0.9}}, "statistics.level"),
        ({"evaluation": {"metrics": {"horizons": ["5y"]}}}, "evaluation.metrics.horizons"),
        ({"clinical": {"tie_drawz": 5}}, "clinical.tie_drawz"),
        ({"clinical": {"cox_penalizer": -1}}, "clinical.cox_penalizer"),
        ({"endpoint": {"horizon": "5 parsecs"}}, "endpoint.horizon"),
        ({"endpoint": {"horizon": 10_000}}, "endpoint.horizon"),  # beyond the follow-up
        ({"endpoint": {"score": "logistic"}}, "endpoint.score"),
    ):
        with pytest.raises(RadiopathInputError, match=f"field '{field}'"):
            run_benchmark(small_cohort, out, {**fast_benchmark, **bad}, progress=False)
    assert not out.exists()


@pytest.mark.slow
def test_repeats_baselines_intervals_and_comparisons(fast_benchmark, small_cohort, tmp_path):
    out = tmp_path / "run"
    cfg = {
        **fast_benchmark,
        "aggregators": ["raw_mean", "mean", "abmil_mil"],
        "models": ["coxph", "fsvm"],
        "repeats": 2,
        "statistics": {"bootstrap": 200},
        "evaluation": {**fast_benchmark["evaluation"], "metrics": {"horizons": [20.0]}},
    }
    result = run_benchmark(small_cohort, out, cfg, progress=False)
    folds = pd.read_csv(out / "folds.csv")
    assert list(folds.columns) == ["patient_id", "repeat", "fold"]
    assert folds.groupby("repeat").patient_id.nunique().tolist() == [24, 24]
    assert sorted(folds.fold.unique()) == list(range(6))
    # every table uses all R x K folds
    metrics = pd.read_csv(out / "metrics.csv")
    assert set(metrics.aggregator) == {"raw_mean", "mean", "abmil_mil"}
    assert metrics.groupby("aggregator").fold.nunique().eq(6).all()
    preds = pd.read_csv(out / "predictions.csv")
    assert preds.groupby(["aggregator", "model"]).size().eq(2 * 24).all()
    risks = pd.read_csv(out / "runs" / "mean" / "risks.csv")
    assert set(risks["repeat"]) == {0, 1}
    # abmil_mil is ABMIL trained without the graph encoder, under its own name
    record = json.loads((out / "runs" / "abmil_mil" / "run.json").read_text())
    assert record["config"]["aggregator"] == "abmil" and record["config"]["use_graph"] is False
    maps = list((out / "importance" / "abmil_mil").glob("*.csv"))
    assert len(maps) == 24 * 2  # one map per patient and modality, from repeat 0 only
    assert not (out / "importance" / "raw_mean").exists()
    # intervals and paired comparisons
    comparisons = pd.read_csv(out / "comparisons.csv")
    # the columns the issue asks for, then the Wilcoxon test's
    spec = "aggregator_a aggregator_b modalities model metric delta ci_low ci_high p p_holm"
    assert list(comparisons.columns[:10]) == spec.split()
    pairs = set(zip(comparisons.aggregator_a, comparisons.aggregator_b))
    assert pairs == {("mean", "raw_mean"), ("abmil_mil", "raw_mean"), ("abmil_mil", "mean")}
    studies = comparisons[comparisons.family == "studies"]
    assert studies.groupby(["aggregator_a", "aggregator_b"]).size().eq(2 * 3 + 1 + 4).all()
    assert set(comparisons.loc[comparisons.family == "horizons", "metric"]) <= {
        "auc@20",
        "brier@20",
    }
    intervals = pd.read_csv(out / "intervals.csv")
    row = intervals[
        (intervals.aggregator == "mean")
        & (intervals.model == "coxph")
        & (intervals.metric == "c_index")
    ]
    part = metrics[
        (metrics.aggregator == "mean") & (metrics.model == "coxph") & (metrics.metric == "c_index")
    ]
    assert row["estimate"].item() == pytest.approx(part.value.mean())
    assert row["ci_low"].item() <= row["estimate"].item() <= row["ci_high"].item()
    assert row["n_folds"].item() == 6
    summary = (out / "summary.md").read_text()
    assert result.summary == summary
    assert "24 patients, 3 folds x 2 repeat(s) = 6 test folds" in summary
    assert re.search(r"best in \d+ of 11 studies, significantly in \d+", summary)
    assert "### Paired differences" in summary and "abmil_mil - raw_mean" in summary
    # the best value of a study is in bold
    cell = f"{part.value.mean():.3f} ({part.value.std():.3f})"
    assert re.search(rf"(\*\*)?{re.escape(cell)}(\*\*)? \[", summary)
    assert "Paired differences" in (out / "report.html").read_text()
    assert (out / "figures" / "comparisons.png").exists()
    # the report again with another B, and beside the published table, from the command line
    cli = CliRunner().invoke(
        main, ["report", "--run", str(out), "--bootstrap", "50", "--reference", "sparra-table1"]
    )
    assert cli.exit_code == 0, cli.output
    assert "| abmil_mil (abmil) | C-index |" in cli.output
    assert pd.read_csv(out / "intervals.csv")["n_boot"].max() == 50
    # resuming with other folds is refused, naming the key
    with pytest.raises(RadiopathInputError, match="field 'repeats'"):
        run_benchmark(small_cohort, out, {**cfg, "repeats": 3}, progress=False)


def test_clinical_baselines_and_horizon_endpoint(
    fast_benchmark, small_cohort, tmp_path, monkeypatch
):
    """A cohort with clinical columns (and the Leibovich inputs) gets clinical/baselines.csv,
    clinical/cox.csv and horizon_metrics.csv, checked against lifelines and sklearn, and the
    report shows them; a failure of this optional stage is recorded, not raised."""
    from lifelines.utils import concordance_index

    from radiopath.clinical.baselines import leibovich_score
    from radiopath.evaluation.horizon import binary_horizon_metrics

    table = pd.read_csv(small_cohort)
    rng = np.random.default_rng(0)
    n = len(table)
    table = table.assign(
        pT=rng.choice(["pT1a", "pT1b", "pT2", "pT3a"], n),
        pN=rng.choice(["pN0", "pNX", "pN1"], n),
        tumor_size=rng.uniform(2, 14, n).round(1),
        grade=rng.choice([1, 2, 3, 4], n),
        necrosis=rng.choice(["yes", "no"], n),
    )
    cohort = small_cohort.parent / "cohort_leibovich.csv"
    table.to_csv(cohort, index=False)
    out = tmp_path / "run"
    cfg = {**fast_benchmark, "endpoint": {"horizon": 30}}
    run_benchmark(cohort, out, cfg, progress=False)

    baselines = pd.read_csv(out / "clinical" / "baselines.csv").set_index("column")
    assert {"age", "sex", "stage", "pT", "leibovich"} <= set(baselines.index)
    assert baselines.loc["stage", "c_index"] == pytest.approx(
        concordance_index(table.time, -table.stage, table.event)
    )
    score = leibovich_score(table.set_index("patient_id"))
    assert baselines.loc["leibovich", "c_index"] == pytest.approx(
        concordance_index(table.time, -score.to_numpy(), table.event)
    )
    cox = pd.read_csv(out / "clinical" / "cox.csv")
    assert set(cox.aggregator) == {"sparra", "mean"}
    risk_rows = cox[cox.term == "risk"]
    assert len(risk_rows) == 2 and risk_rows.lr_p.between(0, 1).all()

    horizon = pd.read_csv(out / "horizon_metrics.csv", dtype={"fold": str})
    assert set(horizon.aggregator) == {"sparra", "mean"}
    assert set(horizon.fold) == {"0", "1", "2", "all"}
    risks = pd.read_csv(out / "runs" / "sparra" / "risks.csv")
    row = horizon[(horizon.aggregator == "sparra") & (horizon.fold == "0")].iloc[0]
    fold0 = risks[risks.fold == 0]
    again = binary_horizon_metrics(fold0.time, fold0.event, fold0.risk, 30.0, row.threshold)
    assert row.roc_auc == pytest.approx(again["roc_auc"], nan_ok=True)
    assert row.accuracy == pytest.approx(again["accuracy"])
    pooled = horizon[(horizon.aggregator == "sparra") & (horizon.fold == "all")].iloc[0]
    assert pooled.n_used + pooled.n_excluded == n

    summary = (out / "summary.md").read_text()
    assert "## Clinical baselines" in summary and "## Fixed-horizon endpoint" in summary
    html = (out / "report.html").read_text()
    assert 'id="clinical"' in html and "Fixed-horizon endpoint" in html
    record = json.loads((out / "run.json").read_text())
    assert record["clinical"]["status"] == "finished"
    assert "clinical/cox.csv" in record["clinical"]["files"]

    # a failure of the optional stage is recorded and shown, the benchmark still finishes
    import radiopath.clinical.stage as stage

    def broken(*args, **kwargs):
        raise RuntimeError("lifelines did not converge")

    monkeypatch.setattr(stage, "write_clinical_outputs", broken)
    done = []
    again = run_benchmark(
        cohort,
        out,
        {**cfg, "clinical": {"tie_draws": 7}},
        progress=False,
        stage_hook=done.append,
    )
    assert "clinical" not in done and "report" in done
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["clinical"]["status"] == "failed"
    assert "lifelines did not converge" in (out / "report.html").read_text()
    assert not (out / "clinical" / "cox.csv").exists()  # no stale table beside the failure
    assert not again.metrics.empty


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"aggregator": ["sparra"]}, "aggregator"),
        ({"train": {"pooling": {"score_nois": 0.5}}}, "train.pooling.score_nois"),
        ({"train": {"sparra": {"alpah0": 1.0}}}, "train.sparra.alpah0"),
        ({"train": {"abmil": {"hiden_channels": 8}}}, "train.abmil.hiden_channels"),
        ({"train": {"mean": {"x": 1}}}, "train.mean.x"),
        ({"train": {"ratio": {"pet": 0.5}}}, "train.ratio.pet"),
        ({"train": {"seed": 3}}, "train.seed"),  # set by the benchmark's own seed
        ({"train": {"sparra": {"kl": "bogus"}}}, "train.sparra.kl"),  # a value, by training
        ({"train": {"preset": "fastest"}}, "train.preset"),
        ({"evaluation": {"coxph": {"alphas": [1.0]}}}, "evaluation.coxph.alphas"),
        ({"evaluation": {"backnd": "torch"}}, "evaluation.backnd"),
        ({"graph": {"presett": "wsi-clustered"}}, "graph.presett"),
        ({"graph": {"preset": {"threshhold": 0.9}}}, "graph.preset.threshhold"),
        ({"graph": {"preset": "no-such-preset"}}, "graph.preset"),
        ({"statistics": {"bootstrp": 10}}, "statistics.bootstrp"),
    ],
)
def test_benchmark_refuses_bad_keys_before_the_graph_stage(small_cohort, tmp_path, bad, field):
    out = tmp_path / "run"
    with refused(field):
        run_benchmark(small_cohort, out, deep_merge(FAST, bad), progress=False)
    assert empty_or_absent(out)


def test_benchmark_checks_the_train_section_whatever_it_trains(small_cohort):
    cohort = read_cohort(small_cohort)
    build_benchmark_config(deep_merge(BENCHMARK_DEFAULTS, FAST), cohort)
    for aggregators, train, field in (
        (["abmil_mil"], {"ratio": {"wsi": 1.5}}, "train.ratio.wsi"),  # a variant: trains ABMIL
        (["raw_mean"], {"sparra": {"alpah0": 1.0}}, "train.sparra.alpah0"),  # trains nothing
    ):
        cfg = deep_merge(BENCHMARK_DEFAULTS, {**FAST, "aggregators": aggregators, "train": train})
        with refused(field):
            build_benchmark_config(cfg, cohort)


def test_benchmark_cli_refuses_a_typo_in_its_config_file(small_cohort, tmp_path):
    bad = write_yaml(tmp_path / "bench.yaml", {**FAST, "train": {"pooling": {"score_nois": 1}}})
    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["benchmark", "--cohort", str(small_cohort), "--out", str(out), "--config", str(bad)],
    )
    assert result.exit_code == 2, result.output
    assert "field 'train.pooling.score_nois'" in result.output and "'score_noise'" in result.output
    assert empty_or_absent(out)


def test_every_experiment_point_is_a_valid_benchmark(small_cohort):
    cohort = read_cohort(small_cohort)
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert files
    for f in files:
        exp = load_experiment(f)
        base = deep_merge(BENCHMARK_DEFAULTS, exp.base)
        for point in exp.points():
            cfg = copy.deepcopy(base)
            for key, value in point.items():
                cfg = set_dotted(cfg, key, value)
            cfg["folds"] = 3  # the test cohort has few events
            build_benchmark_config(cfg, cohort)


@pytest.mark.slow
def test_a_pool_trains_the_aggregators_together_and_writes_the_serial_files(
    fast_benchmark, small_cohort, tmp_path
):
    """On a parallel executor the first train stage trains every aggregator's folds (and
    ensemble members) as units of one map; each train stage is still reported, and the
    files are those of a serial run (same folder names: the report is titled by its
    folder's name)."""
    from ray_helpers import tree_differences

    from radiopath.runkit import read_json

    config = {**fast_benchmark, "train": {**fast_benchmark["train"], "ensemble": 2}}
    run_benchmark(small_cohort, tmp_path / "serial" / "run", config, progress=False)
    finished = []
    pool = {**config, "executor": {"name": "local", "workers": 2}}
    run_benchmark(
        small_cohort, tmp_path / "pool" / "run", pool, progress=False, stage_hook=finished.append
    )
    assert [s for s in finished if s.startswith("train:")] == ["train:sparra", "train:mean"]
    stages = read_json(tmp_path / "pool" / "run" / "stages.json")
    assert stages["train:mean"]["seconds"] == 0.0 < stages["train:sparra"]["seconds"]
    assert tree_differences(tmp_path / "serial" / "run", tmp_path / "pool" / "run") == []
