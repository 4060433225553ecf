"""The compiled random survival forest against scikit-survival's.

Exact where the two forests make the same draws (every feature scored at every node: the
same bootstrap samples give the same trees), statistical where they cannot (``max_features``
drawn at random): the C-index over seeds, and the survival functions.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sksurv.ensemble import RandomSurvivalForest
from sksurv.metrics import concordance_index_censored
from sksurv.tree import SurvivalTree

from radiopath.errors import RadiopathInputError
from radiopath.evaluation import evaluate_folds
from radiopath.evaluation.estimators.rsf import NumbaRandomSurvivalForest

LEAF = dict(min_samples_split=6, min_samples_leaf=3)


def _assert_same_predictions(ours, theirs, X):
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-10)
    for method in ("predict_cumulative_hazard_function", "predict_survival_function"):
        np.testing.assert_allclose(
            getattr(ours, method)(X, return_array=True),
            getattr(theirs, method)(X, return_array=True),
            atol=1e-12,
        )


def test_tree_is_scikit_survivals_tree(whas500_split):
    """No bootstrap, every feature: the log-rank split rule, the thresholds and the
    Nelson-Aalen / Kaplan-Meier node estimates decide everything. (Deeper down, small
    nodes have tied statistics that the two break differently.)"""
    Xtr, ytr, Xte, _ = whas500_split
    theirs = SurvivalTree(max_depth=4, **LEAF).fit(Xtr, ytr)
    ours = NumbaRandomSurvivalForest(
        1, max_depth=4, max_features=None, bootstrap=False, **LEAF
    ).fit(Xtr, ytr)
    assert len(ours.feature_) == theirs.tree_.node_count
    _assert_same_predictions(ours, theirs, Xte)
    np.testing.assert_array_equal(ours.unique_times_, theirs.unique_times_)


def test_bootstrap_forest_is_scikit_survivals_forest(whas500_split):
    """Every feature at every node: the same random_state draws the same bootstrap samples,
    whose counts weight the log-rank statistic and the node estimates as scikit-survival's.
    (Two levels: further down, bootstrap nodes of a few distinct samples often have two
    features that cut off the same samples, a tie broken either way.)"""
    Xtr, ytr, Xte, _ = whas500_split
    kw = dict(n_estimators=12, max_depth=2, max_features=None, random_state=7, **LEAF)
    theirs = RandomSurvivalForest(**kw).fit(Xtr, ytr)
    ours = NumbaRandomSurvivalForest(**kw).fit(Xtr, ytr)
    _assert_same_predictions(ours, theirs, Xte)


def test_c_index_agrees_with_scikit_survival_over_seeds(dataset):
    """``max_features="sqrt"``: the features drawn at each node come from other generators,
    so compare forests over 10 seeds and train/test splits. The bounds are about twice the
    gap between two scikit-survival forests of different seeds."""
    name, X, y, _ = dataset
    rng = np.random.default_rng(0)
    c_ours, c_theirs, surv_gap = [], [], []
    for seed in range(10):
        idx = rng.permutation(len(y))
        tr, te = idx[: int(0.7 * len(y))], idx[int(0.7 * len(y)) :]
        kw = dict(n_estimators=50, max_features="sqrt", random_state=seed, **LEAF)
        ours = NumbaRandomSurvivalForest(**kw).fit(X[tr], y[tr])
        theirs = RandomSurvivalForest(**kw).fit(X[tr], y[tr])
        for forest, out in ((ours, c_ours), (theirs, c_theirs)):
            out.append(
                concordance_index_censored(y["event"][te], y["time"][te], forest.predict(X[te]))[0]
            )
        surv_gap.append(
            np.abs(
                ours.predict_survival_function(X[te], return_array=True)
                - theirs.predict_survival_function(X[te], return_array=True)
            ).mean()
        )
    diff = np.array(c_ours) - np.array(c_theirs)
    assert np.abs(diff).mean() < 0.02, diff
    assert abs(diff.mean()) < 0.01, diff
    assert np.mean(c_ours) > 0.65, name  # both find the signal
    assert np.mean(surv_gap) < 0.05, surv_gap


def test_depth_grid_read_off_one_forest_equals_refits(whas500_split):
    Xtr, ytr, Xte, _ = whas500_split
    kw = dict(n_estimators=10, random_state=3, **LEAF)
    deep = NumbaRandomSurvivalForest(max_depth=6, **kw).fit(Xtr, ytr)
    risks = deep.depth_risks(Xte, [1, 3, 6, None])
    for depth, risk in zip([1, 3, 6], risks):
        refit = NumbaRandomSurvivalForest(max_depth=depth, **kw).fit(Xtr, ytr)
        np.testing.assert_array_equal(risk, refit.predict(Xte))
    np.testing.assert_array_equal(risks[3], deep.predict(Xte))
    assert not np.allclose(risks[0], risks[2])


def test_threads_refits_and_pickles_are_reproducible(whas500_split):
    Xtr, ytr, Xte, _ = whas500_split
    kw = dict(n_estimators=9, max_depth=5, random_state=1, **LEAF)
    a = NumbaRandomSurvivalForest(n_jobs=1, **kw).fit(Xtr, ytr)
    b = NumbaRandomSurvivalForest(n_jobs=2, **kw).fit(Xtr, ytr)
    np.testing.assert_array_equal(a.predict(Xte), b.predict(Xte))
    other = NumbaRandomSurvivalForest(n_jobs=1, **{**kw, "random_state": 2}).fit(Xtr, ytr)
    assert not np.array_equal(a.predict(Xte), other.predict(Xte))
    # kept whole by the evaluation's unit cache
    back = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(
        back.predict_survival_function(Xte, return_array=True),
        a.predict_survival_function(Xte, return_array=True),
    )


def test_step_functions_and_checks(whas500_split):
    Xtr, ytr, Xte, _ = whas500_split
    forest = NumbaRandomSurvivalForest(5, max_depth=3, random_state=0).fit(Xtr, ytr)
    fns = forest.predict_survival_function(Xte[:3])
    arr = forest.predict_survival_function(Xte[:3], return_array=True)
    times = forest.unique_times_[[0, 10, -1]]
    np.testing.assert_allclose(fns[1](times), arr[1, [0, 10, -1]])
    assert np.all(np.diff(arr, axis=1) <= 1e-15) and np.all((arr >= 0) & (arr <= 1))
    chf = forest.predict_cumulative_hazard_function(Xte[:3], return_array=True)
    # the risk score is the cumulative hazard summed over the training event times
    np.testing.assert_allclose(
        forest.predict(Xte[:3]), chf[:, forest.is_event_time_].sum(1), rtol=1e-10
    )
    with pytest.raises(ValueError, match="max_features"):
        NumbaRandomSurvivalForest(max_features="half").fit(Xtr, ytr)
    with pytest.raises(ValueError, match="features"):
        forest.predict(Xte[:, :3])


def test_protocol_engines(small_folds, fast_config):
    """The torch backend grows RSF with the compiled forest; scikit-survival's on request."""
    folds, _ = small_folds
    kw = dict(aggregator="mean", modalities="wsi", models=["rsf"], backend="torch", device="cpu")
    fast = evaluate_folds(folds, config=fast_config, **kw)
    assert isinstance(fast.fitted[("rsf", 0)].estimator, NumbaRandomSurvivalForest)
    ref_config = {**fast_config, "rsf": {**fast_config["rsf"], "engine": "sksurv"}}
    ref = evaluate_folds(folds, config=ref_config, **kw)
    assert isinstance(ref.fitted[("rsf", 0)].estimator, RandomSurvivalForest)
    for res in (fast, ref):
        assert res.metrics.query("metric == 'c_index'")["value"].mean() > 0.65
    with pytest.raises(RadiopathInputError, match="evaluation.rsf.engine.*ranger"):
        evaluate_folds(folds, config={**fast_config, "rsf": {"engine": "ranger"}}, **kw)
