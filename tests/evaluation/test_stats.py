"""The statistics of a run directory (radiopath/evaluation/stats.py): its configuration, the
false-win rate on a cohort without signal, and sweep points compared when they share folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.stats import resolve_statistics_config
from radiopath.training.folds import make_folds

# scikit-survival's own C-AUC divides by zero where a resample has no case before a time
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def test_statistics_config_is_checked_by_name():
    assert resolve_statistics_config(None) == {"bootstrap": 1000, "alpha": 0.05, "seed": 0}
    with pytest.raises(RadiopathInputError, match="statistics.bootstrap"):
        resolve_statistics_config({"bootstrap": 0})
    with pytest.raises(RadiopathInputError, match="statistics.alpha"):
        resolve_statistics_config({"alpha": 1.5})
    with pytest.raises(RadiopathInputError, match="statistics.replicates"):
        resolve_statistics_config({"replicates": 10})
    from radiopath.evaluation.config import resolve_evaluation_config

    with pytest.raises(RadiopathInputError, match="evaluation.metrics.horizons"):
        resolve_evaluation_config({"metrics": {"horizons": [-5]}})
    assert resolve_evaluation_config({"metrics": {"horizons": 1826}}).metrics.horizons == (1826.0,)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_null_cohort_calls_at_most_one_significant_win(seed, tmp_path):
    """No signal (outcomes shuffled against three aggregators' embeddings), the four models,
    19 studies: the report calls at most 1 study a significant win, in each of 5 seeds (one
    repeat and 25 trees here; 5 x 3 folds and 64-d embeddings in bench_statistics.py)."""
    from radiopath.evaluation import evaluate_folds
    from radiopath.evaluation.report import survival_table, win_counts
    from radiopath.evaluation.stats import analyse_run
    from radiopath.evaluation.synthetic import make_fold_embeddings
    from radiopath.io import FoldEmbeddings
    from radiopath.training.folds import write_folds

    folds0, _ = make_fold_embeddings(205, 8, seed=seed)
    rng = np.random.default_rng([seed, 13])  # independent of the outcomes' stream
    ids = folds0[0].patient_id
    order = rng.permutation(len(ids))
    time, event = folds0[0].time[order], folds0[0].event[order]
    table = make_folds(ids, event, 5, seed=seed)
    write_folds(table, tmp_path / "folds.csv")
    frames = {"predictions": [], "survival": [], "metrics": []}
    for agg in ("mean", "abmil", "sparra"):
        X = rng.normal(size=(len(ids), 32)).astype(np.float32)
        fold_embeddings = [
            FoldEmbeddings(
                int(k),
                ids,
                np.where(np.isin(ids, part.patient_id), "test", "train"),
                time,
                event,
                X,
            )
            for k, part in table.groupby("fold")
        ]
        result = evaluate_folds(
            fold_embeddings,
            aggregator=agg,
            modalities="wsi+ct",
            backend="torch",
            device="cpu",
            seed=seed,
            config={"rsf": {"n_estimators": 25}},
        )
        frames["predictions"].append(result.predictions)
        frames["metrics"].append(result.metrics)
        frames["survival"].append(survival_table(result, agg, "wsi+ct"))
    for name, parts in frames.items():
        pd.concat(parts).to_csv(tmp_path / f"{name}.csv", index=False)
    analysis = analyse_run(tmp_path, {"bootstrap": 1000, "seed": seed})
    wins = win_counts(pd.concat(frames["metrics"]), analysis.comparisons)
    assert (wins["n_studies"] == 19).all() and wins["wins"].sum() >= 19
    assert wins["significant"].sum() <= 1
    intervals_ = analysis.intervals
    assert len(intervals_) == 3 * 19 and intervals_["ci_low"].notna().all()


def test_sweep_points_with_the_same_folds_are_compared(tmp_path):
    from radiopath.evaluation.stats import analyse_runs
    from radiopath.training.folds import write_folds

    n = 45
    rng = np.random.default_rng(0)
    ids = [f"p{i:03d}" for i in range(n)]
    time, event = rng.exponential(10, n) + 0.1, rng.uniform(size=n) < 0.6
    runs = {}
    for name, fold_seed, risk_seed in (("a", 1, 0), ("b", 1, 0), ("c", 2, 1), ("d", 1, 2)):
        folds = make_folds(ids, event.astype(int), 3, seed=fold_seed)
        d = tmp_path / name
        d.mkdir()
        write_folds(folds, d / "folds.csv")
        r = np.random.default_rng(risk_seed).normal(size=n)
        pd.DataFrame(
            {
                "aggregator": "mean",
                "modalities": "wsi",
                "model": "coxph",
                "fold": folds["fold"],
                "patient_id": ids,
                "time": time,
                "event": event.astype(int),
                "risk": r,
            }
        ).to_csv(d / "predictions.csv", index=False)
        runs[name] = d
    out = analyse_runs(runs, {"bootstrap": 100})
    assert set(zip(out.point_a, out.point_b)) == {("b", "a"), ("d", "a"), ("d", "b")}  # not c
    same = out[(out.point_a == "b") & (out.point_b == "a")].set_index("metric")
    assert same["delta"].isna().loc["ibs"].all()  # no survival.csv: no IBS
    same = same.dropna(subset=["delta"])
    assert {"c_index", "c_ipcw", "c_auc"} <= set(same.index)
    assert (same["delta"] == 0).all() and (same["p"] == 1).all()
    assert {"aggregator", "modalities_a", "modalities_b", "p_holm"} <= set(out.columns)
