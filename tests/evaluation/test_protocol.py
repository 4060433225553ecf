"""The protocol: outputs, robustness to failing fits and event-free splits, and no leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sksurv.ensemble import RandomSurvivalForest
from sksurv.linear_model import CoxnetSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from radiopath.errors import RadiopathInputError
from radiopath.evaluation import evaluate_folds, forest_depth_risks, prepare_fold
from radiopath.evaluation.protocol import FitFailed, c_index_random_ties, fit_with_retry
from radiopath.io import FoldEmbeddings


def _copy(fold: FoldEmbeddings, **changes) -> FoldEmbeddings:
    fields = {
        k: getattr(fold, k).copy() if isinstance(getattr(fold, k), np.ndarray) else getattr(fold, k)
        for k in ("fold", "patient_id", "split", "time", "event", "embedding", "risk")
    }
    fields.update(changes)
    return FoldEmbeddings(**fields)


@pytest.mark.parametrize("backend", ["sksurv", "torch"])
def test_outputs_and_planted_signal(small_folds, backend, fast_config):
    folds, _ = small_folds
    res = evaluate_folds(
        folds,
        aggregator="mean",
        modalities=["wsi", "ct"],
        backend=backend,
        config=fast_config,
        device="cpu",
    )
    m = res.metrics
    assert list(m.columns[:6]) == ["aggregator", "modalities", "model", "fold", "metric", "value"]
    assert set(m["modalities"]) == {"wsi+ct"}
    # 3 folds x (4 models x c_index, c_ipcw, c_auc, random ties + 3 x ibs)
    assert len(m) == 3 * (4 * 4 + 3)
    assert m.query("model == 'fsvm' and metric == 'ibs'").empty
    assert (m["status"] != "failed").all(), m[m["status"] == "failed"]
    # the planted signal is found by every model
    ci = m.query("metric == 'c_index'").groupby("model")["value"].mean()
    assert (ci > 0.65).all(), ci
    ibs = m.query("metric == 'ibs'")["value"]
    assert ((ibs > 0) & (ibs < 0.25)).all()
    # predictions: every test patient of every fold, once per model
    n_test = sum(int((f.split == "test").sum()) for f in folds)
    assert len(res.predictions) == 4 * n_test
    p = res.predictions.query("model == 'coxph' and fold == 1")
    c = concordance_index_censored(p["event"].astype(bool), p["time"], p["risk"])[0]
    assert c == pytest.approx(
        m.query("model == 'coxph' and fold == 1 and metric == 'c_index'")["value"].item()
    )
    # screening keeps most informative dimensions and drops most noise ones
    for prep in res.prepared:
        kept = set(prep.features.tolist())
        assert len(kept & set(range(4))) >= 3 and len(kept - set(range(4))) <= 5


def test_backends_agree(small_folds, fast_config):
    """Same grids, same inner splits: CoxPH/Coxnet/FSVM pick the same penalties and score alike."""
    folds, _ = small_folds
    kw = dict(
        aggregator="mean", modalities="wsi", models=["coxph", "coxnet", "fsvm"], config=fast_config
    )
    a = evaluate_folds(folds, backend="sksurv", **kw)
    b = evaluate_folds(folds, backend="torch", device="cpu", **kw)
    pa = a.selection.set_index(["model", "fold"])["params"].map(json.loads)
    pb = b.selection.set_index(["model", "fold"])["params"].map(json.loads)
    for key in pa.index:
        for name, value in pa[key].items():
            assert pb[key][name] == pytest.approx(value, rel=1e-6), key
    va = a.metrics.set_index(["model", "fold", "metric"])["value"]
    vb = b.metrics.set_index(["model", "fold", "metric"])["value"]
    assert (va - vb).abs().max() < 1e-3


def test_screening_skipped_for_sparra(small_folds):
    folds, _ = small_folds
    prep = prepare_fold(folds[0], aggregator="sparra")
    assert prep.pvalues is None and len(prep.features) == folds[0].embedding.shape[1]
    prep = prepare_fold(
        folds[0], aggregator="sparra", config={"screening": {"skip_aggregators": []}}
    )
    assert prep.pvalues is not None and len(prep.features) < folds[0].embedding.shape[1]


@pytest.mark.parametrize("backend", ["sksurv", "torch"])
def test_no_leakage_from_the_test_split(small_folds, backend, fast_config):
    """Change every test patient's embedding, time and event: screening, scaling, the
    hyper-parameters and the fitted coefficients of every fold stay exactly the same."""
    folds, _ = small_folds
    rng = np.random.default_rng(5)
    changed = []
    for f in folds:
        te = f.split == "test"
        emb = f.embedding.copy()
        emb[te] = rng.normal(scale=3.0, size=emb[te].shape).astype(emb.dtype)
        time = f.time.copy()
        time[te] = rng.uniform(0.01, 1.0, size=te.sum()) * time[~te].max()
        event = f.event.copy()
        event[te] = rng.integers(0, 2, size=te.sum())
        event[te][0] = 1
        changed.append(_copy(f, embedding=emb, time=time, event=event))
    kw = dict(
        aggregator="mean",
        modalities="wsi",
        models=["coxph", "fsvm", "coxnet"],
        backend=backend,
        config=fast_config,
        device="cpu",
    )
    a = evaluate_folds(folds, **kw)
    b = evaluate_folds(changed, **kw)
    for pa, pb in zip(a.prepared, b.prepared):
        np.testing.assert_array_equal(pa.features, pb.features)
        np.testing.assert_array_equal(pa.scaler.mean_, pb.scaler.mean_)
        np.testing.assert_array_equal(pa.scaler.scale_, pb.scaler.scale_)
        np.testing.assert_array_equal(pa.X_train, pb.X_train)
    pd.testing.assert_series_equal(a.selection["params"], b.selection["params"])
    pd.testing.assert_series_equal(a.selection["cv_score"], b.selection["cv_score"])
    for key, fa in a.fitted.items():
        np.testing.assert_array_equal(
            np.asarray(fa.estimator.coef_), np.asarray(b.fitted[key].estimator.coef_)
        )
    # ... while the test predictions did change
    assert not np.allclose(a.predictions["risk"], b.predictions["risk"])


def _separable_folds(n_folds=3, n=60, seed=0):
    """One feature orders the event times perfectly: an unpenalised Cox model diverges."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    time = np.exp(-3 * x)
    event = np.ones(n, dtype=np.int64)
    event[::4] = 0
    emb = np.c_[20 * x, rng.normal(size=(n, 3))].astype(np.float32)
    ids = np.array([f"S{i}" for i in range(n)])
    folds = []
    for k in range(n_folds):
        split = np.where(np.arange(n) % n_folds == k, "test", "train")
        folds.append(FoldEmbeddings(k, ids, split, time, event, emb))
    return folds


@pytest.mark.parametrize("backend", ["sksurv", "torch"])
def test_failed_fit_is_recorded_and_the_run_goes_on(backend, fast_config):
    folds = _separable_folds()
    cfg = {
        **fast_config,
        "coxph": {"alpha": [0.0]},
        "retry": {"max_retries": 0},
        "screening": {"enabled": False},
    }
    res = evaluate_folds(
        folds,
        aggregator="mean",
        modalities="ct",
        models=["coxph", "fsvm"],
        backend=backend,
        config=cfg,
        device="cpu",
    )
    cox = res.metrics.query("model == 'coxph'")
    assert len(cox) == 3 * 5  # every fold and metric is there, none silently missing
    assert cox["value"].isna().all() and (cox["status"] == "failed").all()
    assert cox["message"].str.contains("alpha=0").all()
    assert res.predictions.query("model == 'coxph'").empty
    fsvm = res.metrics.query("model == 'fsvm'")
    assert fsvm["value"].notna().all()  # the other model of the same folds still ran
    # with retries, a stronger penalty rescues the fit and says so
    cfg["retry"] = {"max_retries": 3, "factor": 10.0}
    res = evaluate_folds(
        folds,
        aggregator="mean",
        modalities="ct",
        models=["coxph"],
        backend=backend,
        config=cfg,
        device="cpu",
    )
    sel = res.selection
    assert (sel["status"] == "retried").all(), sel
    assert sel["params"].map(lambda s: json.loads(s)["alpha"] > 0).all()
    assert sel["message"].str.contains("alpha=0").all()
    # (the near-separable fit may still give survival curves too extreme for an IBS)
    assert res.metrics.query("metric != 'ibs'")["value"].notna().all()


def test_coxnet_weights_too_large_is_retried():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    event = np.ones(40, bool)
    event[::4] = False
    X = np.c_[50 * x, rng.normal(size=(40, 2))]
    y = Surv.from_arrays(event, np.exp(-5 * x))

    def make(**p):
        return CoxnetSurvivalAnalysis(fit_baseline_model=True, **p)

    with pytest.raises(ArithmeticError, match="weights are too large"):
        make(l1_ratio=0.5, alphas=[1e-6]).fit(X, y)
    est, params, status, message = fit_with_retry(
        "coxnet",
        make,
        {"l1_ratio": 0.5, "alphas": [1e-6]},
        X,
        y,
        {"max_retries": 6, "factor": 10.0},
    )
    assert status == "retried" and params["alphas"][0] > 1e-6
    assert "weights are too large" in message
    assert np.isfinite(est.predict(X)).all()
    with pytest.raises(FitFailed, match="weights are too large"):
        fit_with_retry(
            "coxnet",
            make,
            {"l1_ratio": 0.5, "alphas": [1e-6]},
            X,
            y,
            {"max_retries": 1, "factor": 10.0},
        )


@pytest.mark.parametrize("backend", ["sksurv", "torch"])
def test_test_split_without_events(small_folds, backend, fast_config):
    folds, _ = small_folds
    f0 = folds[0]
    event = f0.event.copy()
    event[f0.split == "test"] = 0
    bad = [_copy(f0, event=event), *folds[1:]]
    res = evaluate_folds(
        bad,
        aggregator="mean",
        modalities="wsi",
        models=["coxph", "rsf"],
        backend=backend,
        config=fast_config,
        device="cpu",
    )
    m0 = res.metrics.query("fold == 0")
    assert m0["value"].isna().all() and (m0["status"] == "failed").all()
    assert m0["message"].str.contains("test split has no events").all()
    assert res.metrics.query("fold != 0")["value"].notna().all()
    # predictions of the event-free fold are still written
    assert not res.predictions.query("fold == 0").empty


def test_bad_input_names_fold_patient_and_field(small_folds):
    folds, _ = small_folds
    time = folds[1].time.copy()
    time[7] = -1.0
    with pytest.raises(RadiopathInputError, match=r"patient 'P0007'.*field 'time'"):
        evaluate_folds(
            [folds[0], _copy(folds[1], time=time)],
            aggregator="mean",
            modalities="wsi",
            models=["coxph"],
        )
    with pytest.raises(RadiopathInputError, match="unknown model"):
        evaluate_folds(folds, aggregator="mean", modalities="wsi", models=["cox"])
    with pytest.raises(RadiopathInputError, match="no patient in the test split"):
        evaluate_folds(
            [_copy(folds[0], split=np.full(90, "train"))], aggregator="mean", modalities="wsi"
        )


def test_forest_depth_risks(small_folds):
    prep = prepare_fold(small_folds[0][0], aggregator="mean")
    forest = RandomSurvivalForest(n_estimators=15, min_samples_leaf=3, random_state=0).fit(
        prep.X_train, prep.y_train
    )
    full, d0, d1 = forest_depth_risks(forest, prep.X_test, [None, 0, 1])
    np.testing.assert_allclose(full, forest.predict(prep.X_test), rtol=1e-12)
    # depth 0 = the root of every tree: one value for every patient
    assert np.ptp(d0) < 1e-9
    # depth 1 by hand: the child each patient goes to in each tree
    manual = np.zeros(len(prep.X_test))
    X32 = prep.X_test.astype(np.float32)
    for est in forest.estimators_:
        t = est.tree_
        risk = t.value[:, est.is_event_time_, 0].sum(1)
        left = X32[:, t.feature[0]] <= t.threshold[0]
        node = np.where(left, t.children_left[0], t.children_right[0])
        manual += risk[node]
    np.testing.assert_allclose(d1, manual / len(forest.estimators_), rtol=1e-12)


def test_c_index_random_ties():
    rng = np.random.default_rng(0)
    t = rng.exponential(size=60)
    e = rng.random(60) < 0.7
    score = np.round(-t + rng.normal(scale=1.0, size=60))  # a discrete score with many ties
    harrell = concordance_index_censored(e, t, score)[0]
    assert c_index_random_ties(e, t, score, 400, seed=1) == pytest.approx(harrell, abs=0.01)
    untied = -t + rng.normal(scale=0.1, size=60)
    assert c_index_random_ties(e, t, untied, 5) == pytest.approx(
        concordance_index_censored(e, t, untied)[0]
    )
