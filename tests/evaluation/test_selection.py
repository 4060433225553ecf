"""The one model-selection routine: the choice of a grid point, the retry policy, the records."""

from __future__ import annotations

import numpy as np
import pytest

from radiopath.evaluation import evaluate_folds, prepare_fold, sksurv_backend, torch_backend
from radiopath.evaluation.selection import (
    Grid,
    Outcome,
    RetryPolicy,
    choose,
    mean_scores,
    select_and_refit,
)
from radiopath.io import FoldEmbeddings

nan = float("nan")


def _grid(values, scores):
    return Grid([{"alpha": a} for a in values], np.asarray(scores, dtype=float))


def test_a_point_that_failed_on_any_split_never_wins():
    # point 0 scores best where it was fitted but failed on split 1
    g = _grid([1.0, 10.0, 100.0], [[0.9, 0.6, 0.5], [nan, 0.6, 0.5]])
    np.testing.assert_allclose(mean_scores(g.split_scores), [nan, 0.6, 0.5])
    c = choose("coxph", g)
    assert c.index == 1 and c.params == {"alpha": 10.0} and c.cv_score == pytest.approx(0.6)


def test_an_unavailable_point_never_wins():
    g = Grid([None, {"alpha": 2.0}], np.array([[0.9, 0.5]]))
    assert choose("coxnet", g).index == 1


def test_ties_go_to_the_first_point_in_grid_order():
    g = _grid([100.0, 1.0, 10.0], [[0.7, 0.6, 0.7], [0.5, 0.6, 0.5]])
    assert choose("coxph", g).index == 0


@pytest.mark.parametrize(
    ("model", "expected"), [("coxph", 2), ("coxnet", 2), ("fsvm", 1), ("rsf", 0)]
)
def test_all_nan_takes_the_most_penalised_point(model, expected):
    g = _grid([1.0, 0.1, 10.0], [[nan, nan, nan]])
    c = choose(model, g)
    assert c.index == expected and np.isnan(c.cv_score)
    g = Grid([None, None], np.full((1, 2), nan))
    assert choose(model, g) is None


def test_stronger_penalty_of_each_model():
    p = RetryPolicy(max_retries=3, factor=10.0)
    assert p.stronger("coxph", {"alpha": 0.0}) == {"alpha": 0.01}
    assert p.stronger("coxph", {"alpha": 1.0}) == {"alpha": 10.0}
    assert p.stronger("fsvm", {"alpha": 1.0}) == {"alpha": 0.1}
    assert p.stronger("coxnet", {"l1_ratio": 0.5, "alphas": [0.1]})["alphas"] == [1.0]
    assert p.stronger("coxnet", {"alpha_min_ratio": 0.1}) == {"alpha_min_ratio": 0.5}
    assert RetryPolicy.from_config({"max_retries": 3, "factor": 10.0}, "rsf").max_retries == 0


def test_retry_policy_retries_only_the_failures_together_and_records_each_attempt():
    calls = []

    def attempt(items, params):
        calls.append((list(items), [p["alpha"] for p in params]))
        return [
            Outcome(value=p["alpha"]) if p["alpha"] >= 1 else Outcome(failure="singular")
            for p in params
        ]

    ends = RetryPolicy(3, 10.0).run(
        "coxph", [{"alpha": 0.001}, {"alpha": 5.0}, {"alpha": 0.5}], attempt
    )
    # one batched call, then one with the two failures: 0.001 -> 0.01 (floor), 0.5 -> 5
    assert calls == [([0, 1, 2], [0.001, 5.0, 0.5]), ([0, 2], [0.01, 5.0]), ([0], [0.1])] + [
        ([0], [1.0])
    ]
    assert [e.status for e in ends] == ["retried", "ok", "retried"]
    assert ends[0].message == (
        "alpha=0.001: singular; alpha=0.01: singular; alpha=0.1: singular; refit with alpha=1"
    )
    assert ends[2].params == {"alpha": 5.0} and ends[2].value == 5.0
    assert ends[1].message == ""


def test_retry_policy_gives_up_after_max_retries():
    def fail(items, params):
        return [Outcome(failure="overflow") for _ in items]

    def slow(items, params):
        return [Outcome(value="est", converged=False, detail="max_iter") for _ in items]

    (end,) = RetryPolicy(1, 10.0).run("fsvm", [{"alpha": 1.0}], fail)
    assert end.status == "failed" and end.value is None and end.params == {"alpha": 0.1}
    assert end.message == "alpha=1: overflow; alpha=0.1: overflow"
    (end,) = RetryPolicy(1, 10.0).run("fsvm", [{"alpha": 1.0}], slow)
    assert end.status == "not_converged" and end.value == "est"
    assert (
        end.message == "alpha=1 did not converge (max_iter); alpha=0.1 did not converge (max_iter)"
    )


class _Const:
    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)

    def predict_survival_function(self, X):
        return [lambda t: np.ones_like(t) for _ in range(len(X))]


def test_select_and_refit_records_choice_retries_and_failures(small_folds):
    folds, _ = small_folds
    preps = [prepare_fold(f, aggregator="mean") for f in folds]
    grids = [
        _grid([0.0, 1.0], [[0.8, 0.7], [0.8, 0.7]]),  # alpha=0 wins, fails, refit at 0.01
        Grid([], np.empty((0, 0)), ["l1_ratio=0.5: no path"], "no alpha path"),
        _grid(
            [0.0, 1.0], [[nan, nan], [nan, nan]]
        ),  # all NaN: the most penalised, alpha=1, fails twice
    ]
    calls = []

    def refit(fold_ids, params, choices):
        calls.append(list(fold_ids))
        return [
            Outcome(_Const(p["alpha"])) if 0 < p["alpha"] < 1 else Outcome(failure="singular")
            for p in params
        ]

    out = select_and_refit("coxph", preps, grids, refit, RetryPolicy(1, 10.0))
    assert calls == [[0, 2], [0, 2]]  # the refit is batched, and so is its retry
    assert out[0].status == "retried" and out[0].params == {"alpha": 0.01}
    assert out[0].message == "alpha=0: singular; refit with alpha=0.01"
    assert out[0].cv_score == pytest.approx(0.8)
    np.testing.assert_array_equal(out[0].test_risk, 0.01)
    assert out[1].status == "failed" and out[1].message == "no alpha path"
    assert out[2].status == "failed" and out[2].params == {"alpha": 10.0}
    assert out[2].message == "alpha=1: singular; alpha=10: singular"
    assert np.isnan(out[2].cv_score) and out[2].estimator is None


def test_both_backends_choose_the_same_point_from_agreeing_scores(
    small_folds, fast_config, monkeypatch
):
    """CoxPH and FSVM: the inner scores of the two backends agree, and so does the choice."""
    folds, _ = small_folds
    seen = {}
    for backend, module in (("sksurv", sksurv_backend), ("torch", torch_backend)):
        real = module.select_and_refit

        def spy(model, preps, grids, refit, policy, _real=real, _backend=backend):
            for p, g in zip(preps, grids):
                seen[(_backend, model, p.fold)] = (g, choose(model, g))
            return _real(model, preps, grids, refit, policy)

        monkeypatch.setattr(module, "select_and_refit", spy)
    cfg = {**fast_config, "coxph": {"alpha": [0.1, 1.0, 10.0, 100.0]}}
    kw = dict(aggregator="mean", modalities="wsi", models=["coxph", "fsvm"], config=cfg)
    a = evaluate_folds(folds, backend="sksurv", **kw)
    b = evaluate_folds(folds, backend="torch", device="cpu", **kw)
    for model in ("coxph", "fsvm"):
        for f in range(len(folds)):
            (ga, ca), (gb, cb) = seen[("sksurv", model, f)], seen[("torch", model, f)]
            np.testing.assert_allclose(ga.split_scores, gb.split_scores, atol=1e-6)
            assert ca.index == cb.index, (model, f)
    pd_a = a.selection.set_index(["model", "fold"])["cv_score"]
    pd_b = b.selection.set_index(["model", "fold"])["cv_score"]
    np.testing.assert_allclose(pd_a, pd_b, atol=1e-6)


def test_a_coxnet_alpha_path_that_cannot_be_built_is_retried(fast_config):
    """scikit-survival's path on near-separable data overflows at a tiny alpha_min_ratio;
    the retry policy rebuilds it stopping at a larger alpha, and says so."""
    rng = np.random.default_rng(0)
    n = 60
    x = rng.normal(size=n)
    event = np.ones(n, dtype=np.int64)
    event[::4] = 0
    emb = np.c_[20 * x, rng.normal(size=(n, 3))].astype(np.float32)
    ids = np.array([f"S{i}" for i in range(n)])
    split = np.where(np.arange(n) % 3 == 1, "test", "train")
    folds = [FoldEmbeddings(1, ids, split, np.exp(-3 * x), event, emb)]
    cfg = {
        **fast_config,
        "coxnet": {"l1_ratio": [0.5], "n_alphas": 5, "alpha_min_ratio": 1e-6},
        "screening": {"enabled": False},
    }
    kw = dict(aggregator="mean", modalities="ct", models=["coxnet"], backend="sksurv")
    sel = evaluate_folds(folds, config={**cfg, "retry": {"max_retries": 0}}, **kw).selection
    assert sel["status"].item() == "failed"
    assert sel["message"].item().startswith("l1_ratio=0.5, alpha_min_ratio=1e-06: alpha path:")
    sel = evaluate_folds(folds, config=cfg, **kw).selection
    assert sel["status"].item() == "retried"
    assert "refit with l1_ratio=0.5, alpha_min_ratio=1e-05" in sel["message"].item()
