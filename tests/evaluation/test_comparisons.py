"""Paired comparisons, bootstrap p-values and Holm's correction
(radiopath/evaluation/comparisons.py), against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon
from stats_helpers import arm_tables, oof_cohort, sksurv_metrics

from radiopath.evaluation.arms import score_arm
from radiopath.evaluation.bootstrap import bootstrap_weights
from radiopath.evaluation.comparisons import bootstrap_p, compare_arms, holm, paired_bootstrap

# scikit-survival's own C-AUC divides by zero where a resample has no case before a time
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def test_paired_comparison_matches_an_independent_computation():
    oof = oof_cohort()
    weights = bootstrap_weights(oof.event, 60, seed=5)
    pa, sa = arm_tables(oof, seed=10, name="a")
    pb, sb = arm_tables(oof, seed=11, name="b")
    a, b = score_arm(oof, weights, pa, sa), score_arm(oof, weights, pb, sb)
    rows = compare_arms(a, b).set_index(["model", "metric"])

    def fold_means(preds, model):
        out = []
        for w in weights:
            values = []
            for fs in oof.folds:
                part = preds[(preds.fold == fs.fold) & (preds.model == model)]
                risk = part.set_index("patient_id").loc[oof.patient_id[fs.test], "risk"]
                values.append(sksurv_metrics(oof, fs, w[fs.test], risk.to_numpy())["c_index"])
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
    oof = oof_cohort(repeats=2)
    weights = bootstrap_weights(oof.event, 50, seed=0)
    pa, sa = arm_tables(oof, seed=4, name="a")
    pb, sb = arm_tables(oof, seed=9, name="b", same_as=pa)
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
