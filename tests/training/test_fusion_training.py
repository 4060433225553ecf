"""Fusion in training: the clinical modality, late fusion, the binary head, modality dropout
and staged training, and their configuration errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from radiopath.datasets import make_synthetic_cohort
from radiopath.errors import RadiopathInputError
from radiopath.io import FoldEmbeddings, read_fold_embeddings, write_fold_embeddings
from radiopath.runkit import write_json
from radiopath.training import train_cross_validated
from radiopath.training.config import resolve_training_config
from radiopath.training.data import PatientRecord
from radiopath.training.late import combine_fold
from radiopath.training.loop import _muted, c_index, horizon_weighting

QUICK = {"steps": 24, "n_folds": 2, "batch_size": 8, "hidden": 8, "validation": {"fraction": 0.0}}


@pytest.fixture(scope="module")
def clinical_cohort(tmp_path_factory):
    """30 patients, the signal split between WSI, CT and a clinical marker, 20% missing one
    imaging modality."""
    return make_synthetic_cohort(
        tmp_path_factory.mktemp("clinical_cohort"),
        n_patients=30,
        dim=8,
        wsi_patches=(80, 160),
        ct_patches=(60, 120),
        signal="split",
        clinical_effect=1.0,
        missing_rate=0.2,
        seed=4,
        progress=False,
    )


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"fusion": "sum"}, "fusion"),
        ({"fusion": "late", "modalities": ["wsi"]}, "fusion"),
        ({"late": {"weights": "best"}}, "late.weights"),
        ({"head": "binary"}, "horizon"),
        ({"head": "binary", "horizon": -1}, "horizon"),
        ({"horizon": 5.0}, "horizon"),
        ({"clinical": {"hidden": []}}, "clinical.hidden"),
        ({"clinical": {"scaling": "robust"}}, "clinical.scaling"),
        ({"clinical": {"dropuot": 0.1}}, "clinical.dropuot"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"staged": {"unimodal_fraction": 1.5}}, "staged.unimodal_fraction"),
        ({"fusion_lr_scale": 0}, "fusion_lr_scale"),
        ({"modalities": ["wsi", "genomics"]}, "modalities"),
    ],
)
def test_bad_fusion_settings_are_refused_by_name(override, field):
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config(override)
    assert err.value.field == field


def test_clinical_without_clinical_columns_is_refused_before_any_work(small_cohort, tmp_path):
    table = pd.read_csv(small_cohort)
    table.drop(columns=["age", "sex", "stage"]).to_csv(
        small_cohort.parent / "bare.csv", index=False
    )
    with pytest.raises(RadiopathInputError, match="clinical"):
        train_cross_validated(
            small_cohort.parent / "bare.csv",
            None,
            aggregator="mean",
            modalities="wsi,clinical",
            out_dir=tmp_path / "run",
            config=QUICK,
            progress=False,
        )
    assert not (tmp_path / "run").exists()
    with pytest.raises(RadiopathInputError) as err:
        train_cross_validated(
            small_cohort,
            None,
            aggregator="mean",
            modalities="wsi,clinical",
            out_dir=tmp_path / "run2",
            config={**QUICK, "clinical": {"columns": ["stage", "ecog"]}},
            progress=False,
        )
    assert err.value.field == "clinical.columns" and "ecog" in str(err.value)


def test_attention_run_exports_weights_and_predicts_patients_missing_a_modality(
    clinical_cohort, tmp_path
):
    result = train_cross_validated(
        clinical_cohort,
        None,
        aggregator="sparra",
        modalities="wsi,ct,clinical",
        out_dir=tmp_path / "attention",
        config={**QUICK, "fusion": "attention", "modality_dropout": 0.2},
        progress=False,
    )
    cohort = pd.read_csv(clinical_cohort, dtype={"patient_id": str}).set_index("patient_id")
    assert sorted(result.risks["patient_id"]) == sorted(cohort.index)
    assert np.isfinite(result.risks["risk"]).all()
    weights = pd.read_csv(tmp_path / "attention" / "fusion_weights.csv", dtype={"patient_id": str})
    assert sorted(weights["patient_id"]) == sorted(cohort.index)
    cols = ["weight_wsi", "weight_ct", "weight_clinical"]
    np.testing.assert_allclose(weights[cols].sum(1), 1.0, atol=1e-5)
    for _, row in weights.iterrows():
        for m in ("wsi", "ct"):
            if pd.isna(cohort.loc[row["patient_id"], m]):
                assert row[f"weight_{m}"] == 0.0
    emb = read_fold_embeddings(tmp_path / "attention" / "embeddings" / "fold_0.npz")
    assert emb.embedding.shape[1] == 8 + 3  # fused width + presence columns


def _fake_unimodal(out, fold, modality, ids, split, time, event, risk, inner_c=None):
    write_fold_embeddings(
        out / "unimodal" / modality / "embeddings" / f"fold_{fold}.npz",
        FoldEmbeddings(
            fold, np.array(ids), np.array(split), time, event, np.zeros((len(ids), 2)), risk
        ),
    )
    write_json(
        out / "unimodal" / modality / "checkpoints" / f"fold_{fold}.done.json",
        {"inner_validation_c_index": inner_c},
    )


@pytest.mark.parametrize("kind", ["equal", "c_index", "cox"])
def test_late_fusion_of_identical_risks_keeps_the_unimodal_c_index(tmp_path, kind):
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"P{i:02d}" for i in range(n)]
    split = ["train"] * 30 + ["test"] * 10
    time = rng.exponential(10, n)
    event = (rng.uniform(size=n) < 0.7).astype(np.int64)
    risk = -np.log(time) + rng.normal(0, 1.0, n)  # informative, so Cox weights are positive
    for m in ("wsi", "ct"):
        _fake_unimodal(tmp_path, 0, m, ids, split, time, event, risk, inner_c=0.7)
    fused, rows = combine_fold(tmp_path, 0, ["wsi", "ct"], kind)
    test = fused.part("test")
    order = {p: i for i, p in enumerate(ids)}
    own = risk[[order[p] for p in test.patient_id]]
    assert c_index(test.time, test.event, test.risk) == pytest.approx(
        c_index(test.time, test.event, own), abs=1e-12
    )
    assert [r["modality"] for r in rows] == ["wsi", "ct"]
    assert rows[0]["weight"] == pytest.approx(rows[1]["weight"], rel=1e-6)


def test_late_fusion_scores_a_patient_from_the_modalities_it_has(tmp_path):
    ids = ["A", "B", "C", "D", "E"]
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([1, 1, 0, 1, 0])
    split = ["train", "train", "train", "test", "test"]
    wsi = np.array([3.0, 1.0, 2.0, 5.0, 0.0])
    _fake_unimodal(tmp_path, 0, "wsi", ids, split, time, event, wsi)
    # E has no CT
    _fake_unimodal(
        tmp_path, 0, "ct", ids[:4], split[:4], time[:4], event[:4], np.array([1.0, 0.0, -1.0, 4.0])
    )
    fused, _ = combine_fold(tmp_path, 0, ["wsi", "ct"], "equal")
    got = dict(zip(fused.patient_id, fused.risk))
    z_wsi = (wsi - wsi[:3].mean()) / wsi[:3].std()
    z_ct_d = (4.0 - 0.0) / np.std([1.0, 0.0, -1.0])
    assert got["E"] == pytest.approx(z_wsi[4])
    assert got["D"] == pytest.approx((z_wsi[3] + z_ct_d) / 2)
    # a presence column per modality, E lacking CT
    e_row = list(fused.patient_id).index("E")
    assert fused.embedding[e_row].tolist()[2:] == [1.0, 0.0]


def test_late_fusion_run_writes_a_training_run(clinical_cohort, tmp_path):
    result = train_cross_validated(
        clinical_cohort,
        None,
        aggregator="mean",
        modalities="wsi,clinical",
        out_dir=tmp_path / "late",
        config={**QUICK, "fusion": "late", "late": {"weights": "cox"}},
        progress=False,
    )
    out = tmp_path / "late"
    for m in ("wsi", "clinical"):
        assert (out / "unimodal" / m / "risks.csv").is_file()
    unimodal_folds = pd.read_csv(out / "unimodal" / "wsi" / "folds.csv", dtype={"patient_id": str})
    folds = pd.read_csv(out / "folds.csv", dtype={"patient_id": str}).set_index("patient_id")
    for pid, fold in zip(unimodal_folds["patient_id"], unimodal_folds["fold"]):
        assert folds.loc[pid, "fold"] == fold  # one set of folds for every model
    weights = pd.read_csv(out / "late_weights.csv")
    assert set(weights["modality"]) == {"wsi", "clinical"} and len(weights) == 4
    assert len(result.risks) == len(folds)


def test_horizon_weighting_balances_the_classes_and_needs_both():
    train = [
        PatientRecord(f"P{i}", t, e, ("wsi",))
        for i, (t, e) in enumerate([(1, 1), (2, 1), (3, 0), (8, 0), (9, 1), (10, 0), (11, 0)])
    ]
    # by 5: two events (P0, P1); P2 censored before 5: unknown; four followed past 5
    assert horizon_weighting(train, 5.0) == (5.0, 2.0)
    with pytest.raises(RadiopathInputError) as err:
        horizon_weighting(train, 0.5)
    assert err.value.field == "horizon"


def test_modality_dropout_never_drops_the_last_modality_and_staging_keeps_one():
    chunk = [
        PatientRecord("A", 1.0, 1, ("wsi", "ct", "clinical")),
        PatientRecord("B", 2.0, 0, ("ct",)),
    ]
    gen = torch.Generator().manual_seed(0)
    joint = {"unimodal": False, "dropout": 0.9}
    seen = set()
    for step in range(200):
        out = _muted(chunk, ["wsi", "ct", "clinical"], step, gen, **joint)
        assert all(len(r.modalities) >= 1 for r in out) and out[1].modalities == ("ct",)
        seen.add(out[0].modalities)
    assert len(seen) > 3  # several subsets of A's modalities were seen
    assert _muted(chunk, ["wsi"], 0, gen, unimodal=False, dropout=0.0) is chunk
    staged = {"unimodal": True, "dropout": 0.0}
    assert [r.modalities for r in _muted(chunk, ["wsi", "ct", "clinical"], 1, gen, **staged)] == [
        ("ct",),
        ("ct",),
    ]
    assert _muted(chunk, ["wsi", "ct", "clinical"], 0, gen, **staged)[1].modalities == ()


def test_binary_head_trains_and_its_risk_is_a_logit(clinical_cohort, tmp_path):
    times = pd.read_csv(clinical_cohort)["time"]
    horizon = float(times.median())
    result = train_cross_validated(
        clinical_cohort,
        None,
        aggregator="mean",
        modalities="wsi,ct",
        out_dir=tmp_path / "binary",
        config={
            **QUICK,
            "head": "binary",
            "horizon": horizon,
            "staged": {"unimodal_fraction": 0.3},
        },
        progress=False,
    )
    assert np.isfinite(result.risks["risk"]).all()
    log = pd.read_csv(tmp_path / "binary" / "logs" / "fold_0.csv")
    assert np.isfinite(log["survival_loss"]).all()


def test_horizon_given_as_text_and_the_two_label_rules_agree():
    cfg = resolve_training_config({"head": "binary", "horizon": "5y", "time_unit": "months"})
    from radiopath.training.config import training_horizon

    assert training_horizon(cfg) == pytest.approx(60.0)
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config({"head": "binary", "horizon": "5 parsecs"})
    assert err.value.field == "horizon"
    with pytest.raises(RadiopathInputError) as err:
        resolve_training_config({"head": "binary", "horizon": "5y", "time_unit": "weeks"})
    assert err.value.field == "time_unit"
    # the loss's labels (torch) and the evaluation's (numpy) follow one rule
    from radiopath.evaluation.horizon import horizon_labels as numpy_labels
    from radiopath.models.losses import horizon_labels as torch_labels

    rng = np.random.default_rng(0)
    time = np.round(rng.exponential(10, 200), 0)
    event = rng.uniform(size=200) < 0.6
    label, usable = numpy_labels(time, event, 10.0)
    t_label, t_usable = torch_labels(torch.tensor(time), torch.tensor(event), 10.0)
    assert (t_usable.numpy() == usable).all() and (t_label.numpy() == label.astype(bool)).all()


@pytest.mark.slow
@pytest.mark.parametrize("signal", ["clinical", "wsi"])
def test_attention_weights_follow_the_modality_that_carries_the_signal(tmp_path, signal):
    """Two cohorts of 60 patients: the hazard driven by the clinical marker alone (imaging
    effect 0.05), or by the WSI bags alone (no confounder, no decoy). The modality that
    carries the signal gets the largest mean attention weight, by a margin."""
    settings = (
        {"clinical_effect": 2.0, "effect": 0.05}
        if signal == "clinical"
        else {
            "signal": "wsi",
            "effect": 2.0,
            "clinical_effect": 0.05,
            "confounder": 0.0,
            "decoy": False,
        }
    )
    cohort = make_synthetic_cohort(
        tmp_path / "cohort",
        n_patients=60,
        wsi_patches=(100, 200),
        ct_patches=(60, 120),
        dim=8,
        seed=2,
        progress=False,
        **settings,
    )
    train_cross_validated(
        cohort,
        None,
        aggregator="mean",
        modalities="wsi,ct,clinical",
        out_dir=tmp_path / "run",
        config={"steps": 150, "n_folds": 3, "fusion": "attention", "validation": {"fraction": 0.0}},
        progress=False,
    )
    weights = pd.read_csv(tmp_path / "run" / "fusion_weights.csv")
    mean = {m: weights[f"weight_{m}"].mean() for m in ("wsi", "ct", "clinical")}
    others = max(v for m, v in mean.items() if m != signal)
    assert mean[signal] > others + 0.2, mean


def test_a_clinical_model_reloads_and_its_deletion_check_reads_graph_modalities(
    clinical_cohort, tmp_path
):
    from radiopath.graph import build_cohort_graphs
    from radiopath.training.faithfulness import deletion_check, load_fold_model

    build_cohort_graphs(clinical_cohort, tmp_path / "graphs", progress=False)
    result = train_cross_validated(
        clinical_cohort,
        tmp_path / "graphs",
        aggregator="mean",
        modalities="wsi,clinical",
        out_dir=tmp_path / "run",
        config={**QUICK, "fusion": "attention"},
        progress=False,
    )
    model, _, test, store = load_fold_model(result.out_dir, 0)
    risk = dict(zip(result.risks["patient_id"], result.risks["risk"]))
    from radiopath.training.predict import predict

    again, _, _ = predict(model, test, store, torch.device("cpu"))
    np.testing.assert_allclose(again, [risk[r.patient_id] for r in test], rtol=1e-5, atol=1e-6)
    table = deletion_check(model, test, store, fraction=0.1, n_random=2)
    assert set(table["modality"]) == {"wsi"}
