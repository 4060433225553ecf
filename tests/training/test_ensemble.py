"""radiopath.training.ensemble: a fold's members are the single models of consecutive seeds,
their risks, vectors, contributions and maps combine as documented, and an ensemble resumes
member by member."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from run_checks import assert_contributions_add_up

from radiopath.io import read_fold_embeddings
from radiopath.training import train_cross_validated

# The paper preset (selection maps: a node is kept or weighs 0), two folds, a few steps.
FAST = {"preset": "paper", "epochs": 2, "folds": 2, "batch_size": 8, "hidden": 16}


def _train(cohort, graphs, out, folds=None, **config):
    return train_cross_validated(
        cohort,
        graphs,
        aggregator="sparra",
        modalities="wsi,ct",
        out_dir=out,
        config={**FAST, **config},
        folds=folds,
        progress=False,
    )


@pytest.fixture(scope="module")
def runs(small_cohort, small_graphs, tmp_path_factory):
    """Single models of seeds 1 and 2 on the folds of seed 1, and the two-member ensemble of
    seed 1 (whose outer folds are seed 1's)."""
    root = tmp_path_factory.mktemp("ensemble")
    first = _train(small_cohort, small_graphs, root / "seed1", seed=1)
    second = _train(small_cohort, small_graphs, root / "seed2", first.out_dir / "folds.csv", seed=2)
    singles = [first, second]
    ensemble = _train(small_cohort, small_graphs, root / "ensemble", seed=1, ensemble=2)
    return singles, ensemble


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_members_are_the_single_models_of_consecutive_seeds(runs):
    singles, ensemble = runs
    for k in (0, 1):
        for member, single in ((f"fold_{k}", singles[0]), (f"fold_{k}.member_1", singles[1])):
            got = _weights(ensemble.out_dir / "checkpoints" / f"{member}.pt")
            want = _weights(single.out_dir / "checkpoints" / f"fold_{k}.pt")
            assert got.keys() == want.keys()
            for name in want:
                torch.testing.assert_close(
                    got[name], want[name], rtol=0, atol=0, equal_nan=True, msg=member
                )


def test_risk_is_the_mean_of_risks_standardised_on_the_training_patients(runs):
    """Recomputed from the single runs' exported risks: each seed's test risks less its mean
    over the fold's training patients, over their standard deviation, averaged."""
    singles, ensemble = runs
    for k in (0, 1):
        got = read_fold_embeddings(ensemble.out_dir / "embeddings" / f"fold_{k}.npz")
        parts = [read_fold_embeddings(s.out_dir / "embeddings" / f"fold_{k}.npz") for s in singles]
        z = []
        for part in parts:
            train = part.part("train").risk
            assert list(part.patient_id) == list(got.patient_id)
            z.append((part.risk - train.mean()) / train.std())
        np.testing.assert_allclose(got.risk, np.mean(z, 0), rtol=1e-4, atol=1e-5)
        # the members' vectors side by side
        np.testing.assert_allclose(
            got.embedding, np.concatenate([p.embedding for p in parts], 1), rtol=1e-5, atol=1e-6
        )


def test_contributions_add_up_to_the_ensemble_risk(runs):
    """The averaged contributions plus the averaged offset give the ensemble's risk; a node
    some member kept has weight and a posterior, one that none kept has neither."""
    assert_contributions_add_up(runs[1])


def test_a_grown_ensemble_keeps_its_members(runs, small_cohort, small_graphs):
    """From two members to three: the first two are loaded from their checkpoints (their
    files untouched), the third is trained, the fold re-exported."""
    singles, ensemble = runs
    ckpts = ensemble.out_dir / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.glob("fold_*.pt")}
    grown = _train(small_cohort, small_graphs, ensemble.out_dir, seed=1, ensemble=3)
    for name, data in before.items():
        assert (ckpts / name).read_bytes() == data, name
    assert (ckpts / "fold_0.member_2.pt").exists() and (ckpts / "fold_1.member_2.pt").exists()
    width = singles[0].embeddings(0).embedding.shape[1]
    assert grown.embeddings(0).embedding.shape[1] == 3 * width


def test_reloaded_fold_averages_the_members_normalised_maps_and_mixes_their_posteriors(runs):
    """``load_fold_model`` gives the ensemble back; its node weights are the mean of the
    members' weights, each over its graph's total (so they sum to 1 per graph), and its
    posterior of ``s`` is the members' equal-weight mixture where a member kept the node."""
    from radiopath.models.ensemble import EnsembleSurvivalModel
    from radiopath.training.data import collate
    from radiopath.training.faithfulness import load_fold_model

    _, ensemble = runs
    model, _, test, store = load_fold_model(ensemble.out_dir, 0)
    assert isinstance(model, EnsembleSurvivalModel) and len(model.members) >= 2
    batch = collate(test[:4], store, model.modalities)
    with torch.no_grad():
        out = model(batch)
        parts = [member(batch) for member in model.members]
    for m in ("wsi", "ct"):
        graph_of = batch.modalities[m].graphs.batch.numpy()
        weights = np.stack([p.node_weight[m].numpy() for p in parts])
        totals = np.stack([np.bincount(graph_of, w)[graph_of] for w in weights])
        np.testing.assert_allclose(out.node_weight[m].numpy(), (weights / totals).mean(0), 1e-5)
        np.testing.assert_allclose(np.bincount(graph_of, out.node_weight[m].numpy()), 1, 1e-5)
        means = np.stack([p.node_posterior[m][0].numpy() for p in parts])
        sds = np.stack([p.node_posterior[m][1].numpy() for p in parts])
        for node in range(means.shape[1]):
            kept = ~np.isnan(means[:, node])
            got_mean, got_sd = (t[node].item() for t in out.node_posterior[m])
            if not kept.any():
                assert np.isnan(got_mean) and np.isnan(got_sd)
                continue
            # the law of total variance: the mean variance plus the variance of the means
            mu, sd = means[kept, node], sds[kept, node]
            mix_var = np.mean(sd**2) + np.var(mu)
            assert got_mean == pytest.approx(np.mean(mu), abs=1e-5)
            assert got_sd == pytest.approx(np.sqrt(max(mix_var, 0.0)), abs=1e-4)


def test_exported_training_rows_equal_the_ensembles_own_prediction(runs):
    """The training patients' risks and vectors are composed from the members' passes that
    standardise their risks (not predicted a second time): to the bit what the ensemble
    gives when it reads them itself."""
    from radiopath.training.faithfulness import load_fold_model
    from radiopath.training.predict import predict

    _, ensemble = runs
    for k in (0, 1):
        model, train, _, store = load_fold_model(ensemble.out_dir, k)
        risk, embedding, _ = predict(model, train, store, torch.device("cpu"), FAST["batch_size"])
        got = read_fold_embeddings(ensemble.out_dir / "embeddings" / f"fold_{k}.npz").part("train")
        assert list(got.patient_id) == [r.patient_id for r in train]
        np.testing.assert_array_equal(got.risk, risk)
        np.testing.assert_array_equal(got.embedding, embedding)


def test_a_binary_heads_ensemble_averages_logits(small_cohort, small_graphs, tmp_path):
    """A binary head's score is a logit with its threshold at 0: the ensemble averages the
    members' logits unstandardised, so its score is still one."""
    from radiopath.training.data import collate
    from radiopath.training.faithfulness import load_fold_model

    horizon = float(pd.read_csv(small_cohort)["time"].median())
    result = _train(
        small_cohort, small_graphs, tmp_path, head="binary", horizon=horizon, ensemble=2
    )
    model, _, test, store = load_fold_model(tmp_path, 0)
    assert model.risk_mean.tolist() == [0.0, 0.0] and model.risk_scale.tolist() == [1.0, 1.0]
    with torch.no_grad():
        batch = collate(test, store, model.modalities)
        logits = [member(batch, node_weights=False).risk.numpy() for member in model.members]
    exported = result.risks.set_index("patient_id").loc[[r.patient_id for r in test], "risk"]
    np.testing.assert_allclose(exported.to_numpy(), np.mean(logits, 0), rtol=1e-5, atol=1e-6)
