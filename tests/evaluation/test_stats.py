"""Bootstrap intervals and paired tests, checked against scikit-survival / scipy / numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sksurv.metrics as M
from scipy.stats import wilcoxon
from sksurv.util import Surv

from radiopath.errors import RadiopathInputError
from radiopath.evaluation.protocol import _follow_up_adjusted
from radiopath.evaluation.stats import (
    bootstrap_p,
    bootstrap_weights,
    compare_arms,
    holm,
    intervals,
    out_of_fold,
    paired_bootstrap,
    resolve_statistics_config,
    score_arm,
)
from radiopath.training.folds import make_folds

HORIZON = 5.0

# scikit-survival's own C-AUC divides by zero where a resample has no case before a time
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def _cohort(n=60, seed=0, repeats=1):
    rng = np.random.default_rng(seed)
    time = np.round(rng.exponential(10, n), 1) + 0.1  # rounded: tied times
    event = rng.uniform(size=n) < 0.6
    ids = [f"p{i:03d}" for i in range(n)]
    folds = make_folds(ids, event.astype(int), 3, seed=1, repeats=repeats)
    outcomes = pd.DataFrame({"patient_id": ids, "time": time, "event": event.astype(int)})
    oof = out_of_fold(folds, outcomes, {"metrics": {"horizons": [HORIZON]}})
    return oof


def _survival(risk, t):
    return np.exp(-t / 10 * np.exp(risk))


def _arm_tables(oof, seed, name="x", same_as=None):
    """Predictions (with tied risks) and survival curves at each fold's grid and the horizon."""
    rng = np.random.default_rng(seed)
    rows, srows = [], []
    for fs in oof.folds:
        pid = oof.patient_id[fs.test]
        for model in ("coxph", "fsvm"):
            risk = rng.normal(size=len(pid))
            risk[:3] = risk[0]  # tied risks
            if same_as is not None:
                part = same_as[(same_as.fold == fs.fold) & (same_as.model == model)]
                risk = part.set_index("patient_id").loc[pid, "risk"].to_numpy()
            rows.append(
                pd.DataFrame(
                    {
                        "aggregator": name,
                        "modalities": "wsi",
                        "model": model,
                        "fold": fs.fold,
                        "patient_id": pid,
                        "time": fs.time,
                        "event": fs.event.astype(int),
                        "risk": risk,
                    }
                )
            )
            if model == "coxph":
                for t in [*fs.times, HORIZON]:
                    srows.append(
                        pd.DataFrame(
                            {
                                "model": model,
                                "fold": fs.fold,
                                "patient_id": pid,
                                "t": t,
                                "survival": _survival(risk, t),
                            }
                        )
                    )
    return pd.concat(rows, ignore_index=True), pd.concat(srows, ignore_index=True)


def _sksurv_metrics(oof, fs, counts, risk):
    """scikit-survival on the resampled data itself (each patient repeated ``counts`` times)."""
    rep = np.repeat(np.arange(len(fs.test)), counts.astype(int))
    train = np.ones(len(oof.patient_id), bool)
    train[fs.test] = False
    y_train = Surv.from_arrays(oof.event[train], oof.time[train])
    y_test = Surv.from_arrays(fs.event[rep], fs.time[rep])
    y_eval = _follow_up_adjusted(Surv.from_arrays(fs.event, fs.time), oof.time[train])[rep]
    r = risk[rep]
    out = {}

    def attempt(name, fn):
        try:
            out[name] = float(fn())
        except ValueError:  # undefined on this resample (e.g. a time outside its follow-up)
            pass

    attempt("c_index", lambda: M.concordance_index_censored(y_test["event"], y_test["time"], r)[0])
    attempt("c_ipcw", lambda: M.concordance_index_ipcw(y_train, y_test, r, tau=fs.tau)[0])
    attempt("c_auc", lambda: M.cumulative_dynamic_auc(y_train, y_eval, r, fs.times)[1])
    surv = np.column_stack([_survival(risk, t) for t in fs.times])[rep]
    attempt("ibs", lambda: M.integrated_brier_score(y_train, y_eval, surv, fs.times))
    attempt("auc@5", lambda: M.cumulative_dynamic_auc(y_train, y_eval, r, [HORIZON])[0][0])
    s5 = _survival(risk, HORIZON)[rep]
    attempt("brier@5", lambda: M.brier_score(y_train, y_eval, s5, [HORIZON])[1][0])
    return out


def test_every_replicate_equals_sksurv_on_the_resampled_patients():
    oof = _cohort()
    weights = bootstrap_weights(oof.event, 25, seed=3)
    preds, surv = _arm_tables(oof, seed=1)
    arm = score_arm(oof, weights, preds, surv)
    checked = dict.fromkeys(["c_index", "c_ipcw", "c_auc", "ibs", "auc@5", "brier@5"], 0)
    with np.errstate(all="ignore"):
        for j, fs in enumerate(oof.folds):
            part = preds[(preds.fold == fs.fold) & (preds.model == "coxph")]
            risk = part.set_index("patient_id").loc[oof.patient_id[fs.test], "risk"].to_numpy()
            for b in range(weights.shape[0]):
                reference = _sksurv_metrics(oof, fs, weights[b, fs.test], risk)
                for metric, value in reference.items():
                    if np.isfinite(value):
                        got = arm.values[("coxph", metric)][b, j]
                        assert got == pytest.approx(value, abs=1e-9), (metric, b, fs.fold)
                        checked[metric] += 1
    # row 0 (the data) and most replicates are defined for every metric
    assert min(checked.values()) >= 40, checked


def test_weights_are_stratified_by_event_and_intervals_are_numpy_percentiles():
    oof = _cohort(repeats=2)
    weights = bootstrap_weights(oof.event, 40, seed=0)
    assert (weights[0] == 1).all()
    assert (weights[1:, oof.event].sum(1) == oof.event.sum()).all()
    assert (weights[1:, ~oof.event].sum(1) == (~oof.event).sum()).all()
    preds, surv = _arm_tables(oof, seed=2)
    arm = score_arm(oof, weights, preds, surv)
    assert len(arm.fold_ids) == 6  # 3 folds x 2 repeats
    # independent: per replicate, the mean over folds of sksurv's C-index on the resample
    reps = []
    for b in range(weights.shape[0]):
        values = []
        for fs in oof.folds:
            part = preds[(preds.fold == fs.fold) & (preds.model == "fsvm")]
            risk = part.set_index("patient_id").loc[oof.patient_id[fs.test], "risk"].to_numpy()
            values.append(_sksurv_metrics(oof, fs, weights[b, fs.test], risk)["c_index"])
        reps.append(np.mean(values))
    row = intervals(arm).set_index(["model", "metric"]).loc[("fsvm", "c_index")]
    assert row["estimate"] == pytest.approx(reps[0], abs=1e-12)
    lo, hi = np.percentile(reps[1:], [2.5, 97.5])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    assert row["n_folds"] == 6 and row["n_boot"] == 40
    # the average over models is the mean of the models' statistics
    table = intervals(arm).set_index(["model", "metric"])
    avg = table.loc[("avg", "c_index"), "estimate"]
    assert avg == pytest.approx(
        (table.loc[("fsvm", "c_index"), "estimate"] + table.loc[("coxph", "c_index"), "estimate"])
        / 2
    )


def test_paired_comparison_matches_an_independent_computation():
    oof = _cohort()
    weights = bootstrap_weights(oof.event, 60, seed=5)
    pa, sa = _arm_tables(oof, seed=10, name="a")
    pb, sb = _arm_tables(oof, seed=11, name="b")
    a, b = score_arm(oof, weights, pa, sa), score_arm(oof, weights, pb, sb)
    rows = compare_arms(a, b).set_index(["model", "metric"])

    def fold_means(preds, model):
        out = []
        for w in weights:
            values = []
            for fs in oof.folds:
                part = preds[(preds.fold == fs.fold) & (preds.model == model)]
                risk = part.set_index("patient_id").loc[oof.patient_id[fs.test], "risk"]
                values.append(_sksurv_metrics(oof, fs, w[fs.test], risk.to_numpy())["c_index"])
            out.append(values)
        return np.array(out)  # [1 + B, F]

    va, vb = fold_means(pa, "coxph"), fold_means(pb, "coxph")
    delta = va.mean(1) - vb.mean(1)
    row = rows.loc[("coxph", "c_index")]
    assert row["delta"] == pytest.approx(delta[0], abs=1e-12)
    lo, hi = np.percentile(delta[1:], [2.5, 97.5])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)
    below, above = (delta[1:] <= 0).sum() + 1, (delta[1:] >= 0).sum() + 1
    assert row["p"] == pytest.approx(min(1.0, 2 * min(below, above) / 61))
    assert row["p_wilcoxon"] == pytest.approx(wilcoxon(va[0] - vb[0]).pvalue)
    # Holm over the studies of the pair (here 2 models x 3 metrics + IBS + 4 averages)
    studies = compare_arms(a, b)
    studies = studies[studies.family == "studies"]
    assert len(studies) == 2 * 3 + 1 + 4
    assert np.allclose(studies["p_holm"], holm(studies["p"]))
    assert (studies["p_holm"] >= studies["p"]).all()
    horizons = compare_arms(a, b)
    assert set(horizons.loc[horizons.family == "horizons", "metric"]) == {"auc@5", "brier@5"}


def test_identical_risks_give_delta_zero_and_p_one():
    oof = _cohort(repeats=2)
    weights = bootstrap_weights(oof.event, 50, seed=0)
    pa, sa = _arm_tables(oof, seed=4, name="a")
    pb, sb = _arm_tables(oof, seed=9, name="b", same_as=pa)
    rows = compare_arms(score_arm(oof, weights, pa, sa), score_arm(oof, weights, pb, sb))
    assert len(rows) > 10
    assert (
        (rows["delta"] == 0).all() and (rows["ci_low"] == 0).all() and (rows["ci_high"] == 0).all()
    )
    assert (rows["p"] == 1).all() and (rows["p_holm"] == 1).all()
    assert (rows["p_wilcoxon"] == 1).all() and (rows["p_wilcoxon_holm"] == 1).all()


def test_holm_and_bootstrap_p_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> 0.06 (monotone)
    assert np.allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02]) and np.isnan(adjusted[4])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert bootstrap_p(np.zeros(99)) == 1.0
    assert bootstrap_p(np.ones(99)) == pytest.approx(2 / 100)
    assert bootstrap_p(np.r_[-np.ones(9), np.ones(90)]) == pytest.approx(2 * 10 / 100)


def test_planted_difference_of_005_is_detected_in_most_seeds():
    """Two risk scores of 300 patients, population C-index 0.663 vs 0.613 (b is a plus
    noise; benchmarks/bench_statistics.py measures the population gap and the
    independent-noise case)."""
    detected = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        eta = rng.normal(size=300)
        t_event, t_cens = rng.exponential(np.exp(-eta)), rng.exponential(1.5, size=300)
        a = eta + rng.normal(size=300)
        b = a + 1.45 * rng.normal(size=300)
        res = paired_bootstrap(np.minimum(t_event, t_cens), t_event <= t_cens, a, b, seed=seed)
        assert res["delta"] == pytest.approx(res["estimate_a"] - res["estimate_b"])
        detected += res["ci_low"] > 0
    assert detected >= 3


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


def test_partial_predictions_are_named():
    oof = _cohort()
    preds, _ = _arm_tables(oof, seed=1)
    first = oof.patient_id[oof.folds[0].test][0]
    with pytest.raises(RadiopathInputError, match=f"fold 0: predictions for .*{first}"):
        score_arm(oof, bootstrap_weights(oof.event, 5), preds[preds.patient_id != first])


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
