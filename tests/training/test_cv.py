"""radiopath.training.cv: cross-validated training, the run directory's contract, resume
(partial files detected and recomputed), validation, fusion runs (clinical, attention, late,
binary head) and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from run_checks import assert_contributions_add_up

from radiopath.cli import main
from radiopath.datasets import make_synthetic_cohort
from radiopath.errors import RadiopathInputError
from radiopath.graph import load_graph
from radiopath.io import load_patient_bags, read_cohort, read_fold_embeddings
from radiopath.runkit import verify_digests
from radiopath.training import train_cross_validated

# The paper preset: these tests check its selection maps (ratio 0.2, selection importance).
FAST = {"preset": "paper", "epochs": 2, "folds": 2, "batch_size": 8, "hidden": 16}


@pytest.fixture(scope="module")
def sparra_run(small_cohort, small_graphs, tmp_path_factory):
    out = tmp_path_factory.mktemp("sparra_run")
    result = train_cross_validated(
        small_cohort,
        small_graphs,
        aggregator="sparra",
        modalities="wsi,ct",
        out_dir=out,
        config={**FAST, "monitor_test": True},
        progress=False,
    )
    return result


def test_run_json_names_aggregator_and_modalities(sparra_run):
    record = json.loads((sparra_run.out_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["aggregator"] == "sparra"
    assert record["config"]["modalities"] == ["wsi", "ct"]
    assert record["config"]["sparra"]["beta0"] == 1e-2


def test_fold_embeddings_cover_train_and_test(sparra_run, small_cohort):
    cohort = read_cohort(small_cohort)
    folds = pd.read_csv(sparra_run.out_dir / "folds.csv", dtype={"patient_id": str})
    assert sorted(folds["patient_id"]) == sorted(cohort.patient_ids)
    for k in (0, 1):
        emb = read_fold_embeddings(sparra_run.out_dir / "embeddings" / f"fold_{k}.npz")
        assert sorted(emb.patient_id) == sorted(cohort.patient_ids)
        test_ids = set(folds.loc[folds["fold"] == k, "patient_id"])
        assert set(emb.patient_id[emb.split == "test"]) == test_ids
        assert emb.embedding.shape == (len(cohort), 2 * FAST["hidden"])
        assert np.isfinite(emb.embedding).all() and np.isfinite(emb.risk).all()
        # Times and events are the cohort's.
        for pid, t, e in zip(emb.patient_id, emb.time, emb.event):
            assert t == pytest.approx(cohort[pid].time) and e == cohort[pid].event


def test_risks_csv_is_the_test_folds(sparra_run):
    risks = pd.read_csv(sparra_run.out_dir / "risks.csv", dtype={"patient_id": str})
    assert list(risks.columns) == [
        "aggregator",
        "modalities",
        "repeat",
        "fold",
        "patient_id",
        "time",
        "event",
        "risk",
    ]
    assert risks["patient_id"].is_unique and set(risks["repeat"]) == {0}
    assert set(risks["aggregator"]) == {"sparra"} and set(risks["modalities"]) == {"wsi+ct"}
    for k, part in risks.groupby("fold"):
        emb = read_fold_embeddings(sparra_run.out_dir / "embeddings" / f"fold_{k}.npz").part("test")
        lookup = dict(zip(emb.patient_id, emb.risk))
        np.testing.assert_allclose(part["risk"], [lookup[p] for p in part["patient_id"]])


def test_epoch_logs(sparra_run):
    log = pd.read_csv(sparra_run.out_dir / "logs" / "fold_0.csv")
    assert log["epoch"].tolist() == [0, 1]
    for col in (
        "loss",
        "survival_loss",
        "aux_loss",
        "wsi/kl",
        "ct/reconstruction",
        "train_c_index",
        "val_c_index",
        "lr",
    ):
        assert col in log.columns
    assert np.isfinite(log["loss"]).all()
    np.testing.assert_allclose(log["loss"], log["survival_loss"] + log["aux_loss"], rtol=1e-5)


def test_importance_maps_every_patch_in_file_order(sparra_run, small_cohort, small_graphs):
    cohort = read_cohort(small_cohort)
    manifest = pd.read_csv(small_graphs / "manifest.csv", dtype={"patient_id": str})
    for patient in cohort.patients:
        for m in ("wsi", "ct"):
            table = pd.read_csv(sparra_run.importance_path(patient.patient_id, m))
            bag = load_patient_bags(patient, m)[0]
            axes = ["x", "y"] if m == "wsi" else ["x", "y", "z"]
            assert list(table.columns) == [*axes, "importance", "contribution", "s_mean", "s_sd"]
            np.testing.assert_array_equal(table[axes].to_numpy(), bag.coords)
            # Every node carries one weight; the weights of a graph's nodes sum to 1 and the
            # nodes dropped by top-k pooling (ratio 0.2 twice) carry 0.
            row = manifest[
                (manifest["patient_id"] == patient.patient_id) & (manifest["modality"] == m)
            ]
            graph = load_graph(small_graphs / row["graph"].iloc[0])
            node_w = np.zeros(graph.num_nodes)
            node_w[graph.assignment.numpy()] = table["importance"].to_numpy()
            assert node_w.sum() == pytest.approx(1.0, abs=1e-4)
            assert (node_w > 0).sum() == int(np.ceil(0.2 * np.ceil(0.2 * graph.num_nodes)))


def test_contributions_add_up_to_the_risk(sparra_run):
    """Signed patch contributions of both modalities plus the offset give the exported risk,
    and SPARRA's posterior is defined exactly on the nodes that survived pooling (each has a
    positive standard deviation)."""
    assert_contributions_add_up(sparra_run)
    for pid in sparra_run.risks["patient_id"]:
        for m in ("wsi", "ct"):
            table = pd.read_csv(sparra_run.importance_path(pid, m))
            assert table.loc[table["importance"] > 0, "s_sd"].gt(0).all()


def test_resume_skips_finished_folds(sparra_run, small_cohort, small_graphs, monkeypatch):
    before = (sparra_run.out_dir / "risks.csv").read_text()

    def boom(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr("radiopath.training.fold_unit.fit_fold", boom)
    again = train_cross_validated(
        small_cohort,
        small_graphs,
        aggregator="sparra",
        modalities="wsi,ct",
        out_dir=sparra_run.out_dir,
        config=FAST,
        progress=False,
    )
    assert (sparra_run.out_dir / "risks.csv").read_text() == before
    assert again.fold_c_index == pytest.approx(sparra_run.fold_c_index)


@pytest.mark.parametrize("extra", [{}, {"cox_memory": True}], ids=["batch_cox", "cox_memory"])
def test_interrupted_fold_continues_from_its_checkpoint(
    small_cohort, small_graphs, tmp_path, monkeypatch, extra
):
    import radiopath.training.loop as loop

    cfg = {**FAST, "epochs": 3, **extra}
    real_epoch = loop._train_epoch
    calls = {"n": 0}

    class Killed(Exception):
        pass

    def dies_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1 of fold 0, after epoch 0's checkpoint
            raise Killed
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", dies_in_second_epoch)
    with pytest.raises(Killed):
        train_cross_validated(
            small_cohort,
            small_graphs,
            aggregator="abmil",
            modalities="wsi",
            out_dir=tmp_path,
            config=cfg,
            progress=False,
        )
    first = pd.read_csv(tmp_path / "logs" / "fold_0.csv")
    assert first["epoch"].tolist() == [0]
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"
    state = torch.load(tmp_path / "checkpoints" / "fold_0.pt", weights_only=False)
    assert state["epoch"] == 0 and not state["finished"]

    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    result = train_cross_validated(
        small_cohort,
        small_graphs,
        aggregator="abmil",
        modalities="wsi",
        out_dir=tmp_path,
        config=cfg,
        progress=False,
    )
    log = pd.read_csv(tmp_path / "logs" / "fold_0.csv")
    assert log["epoch"].tolist() == [0, 1, 2]
    pd.testing.assert_series_equal(log.iloc[0], first.iloc[0])  # epoch 0 was not redone
    assert torch.load(tmp_path / "checkpoints" / "fold_0.pt", weights_only=False)["finished"]
    assert set(result.fold_c_index) == {0, 1}
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["status"] == "finished" and record["history"][0]["status"] == "failed"
    # Exact resume: every random generator is in the checkpoint, so the resumed run's
    # risks equal an uninterrupted run's to the bit (dropout draws included).
    clean = train_cross_validated(
        small_cohort,
        small_graphs,
        aggregator="abmil",
        modalities="wsi",
        out_dir=tmp_path / "clean",
        config=cfg,
        progress=False,
    )
    pd.testing.assert_frame_equal(result.risks, clean.risks)


def test_inner_validation_never_reads_the_test_fold(small_cohort, small_graphs, tmp_path):
    """The epoch chosen on the inner validation split does not change when the outer test
    patients' outcomes are scrambled."""
    cfg = {**FAST, "epochs": 6, "validation": {"fraction": 0.3, "metric": "c_index"}}
    table = pd.read_csv(small_cohort)
    chosen = {}
    for name in ("original", "scrambled"):
        out = tmp_path / name
        if name == "scrambled":
            folds = pd.read_csv(tmp_path / "original" / "folds.csv", dtype={"patient_id": str})
            test = table["patient_id"].astype(str).isin(folds[folds["fold"] == 0]["patient_id"])
            rng = np.random.default_rng(0)
            table.loc[test, "time"] = rng.permutation(table.loc[test, "time"].to_numpy()) * 3.1
            table.loc[test, "event"] = 1 - table.loc[test, "event"]
            csv = small_cohort.parent / "scrambled_cohort.csv"
            table.to_csv(csv, index=False)
        else:
            csv, folds = small_cohort, None
        train_cross_validated(
            csv,
            small_graphs,
            aggregator="sparra",
            modalities="wsi",
            out_dir=out,
            config=cfg,
            folds=folds,
            progress=False,
        )
        state = torch.load(out / "checkpoints" / "fold_0.pt", weights_only=False)
        log = pd.read_csv(out / "logs" / "fold_0.csv")
        chosen[name] = (state["best"]["epoch"], log["inner_val_c_index"].tolist())
    assert chosen["original"] == chosen["scrambled"]
    assert chosen["original"][0] >= 0


def test_changed_configuration_is_not_resumed_silently(sparra_run, small_cohort, small_graphs):
    (sparra_run.out_dir / "checkpoints" / "fold_0.done.json").rename(
        sparra_run.out_dir / "checkpoints" / "fold_0.done.bak"
    )
    try:
        with pytest.raises(RadiopathInputError, match="fold_0.pt.*different configuration"):
            train_cross_validated(
                small_cohort,
                small_graphs,
                aggregator="sparra",
                modalities="wsi,ct",
                out_dir=sparra_run.out_dir,
                config={**FAST, "lr": 1e-2},
                progress=False,
            )
    finally:
        (sparra_run.out_dir / "checkpoints" / "fold_0.done.bak").rename(
            sparra_run.out_dir / "checkpoints" / "fold_0.done.json"
        )


def test_folds_file_is_reused(sparra_run, small_cohort, small_graphs, tmp_path):
    result = train_cross_validated(
        small_cohort,
        small_graphs,
        aggregator="mean",
        modalities="ct",
        out_dir=tmp_path,
        config={**FAST, "epochs": 1},
        folds=sparra_run.out_dir / "folds.csv",
        progress=False,
    )
    assert result.folds.equals(sparra_run.folds)
    assert (tmp_path / "folds.csv").read_text() == (sparra_run.out_dir / "folds.csv").read_text()
    imp = pd.read_csv(result.importance_path(result.folds["patient_id"][0], "ct"))
    # Mean pooling: uniform over the surviving nodes.
    assert imp["importance"].max() > 0 and (imp["importance"] >= 0).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggregator": "maxpool"}, "field 'aggregator'.*unknown aggregator 'maxpool'"),
        ({"modalities": "wsi,mri"}, "field 'modalities'.*'mri'"),
        ({"config": {"epochz": 3}}, "field 'epochz'.*unknown configuration key"),
        ({"config": {"ratio": {"wsi": 1.5}}}, "field 'ratio.wsi'.*<= 1, got 1.5"),
        ({"config": {"pooling": {"score_noise": -1}}}, "field 'pooling.score_noise'"),
        ({"config": {"importance": "gradcam"}}, "field 'importance'.*receptive_field"),
        ({"config": {"preset": "fastest"}}, "field 'preset'.*interpretable"),
        ({"device": "tpu"}, "field 'device'"),
    ],
)
def test_bad_arguments_are_named_before_training(
    small_cohort, small_graphs, tmp_path, kwargs, message
):
    args = {"aggregator": "sparra", "modalities": "wsi,ct", "config": FAST}
    args.update(kwargs)
    with pytest.raises(RadiopathInputError, match=message):
        train_cross_validated(small_cohort, small_graphs, out_dir=tmp_path, progress=False, **args)
    assert not (tmp_path / "checkpoints").exists()


def test_modality_without_graphs_is_named(small_cohort, tmp_path):
    from radiopath.graph import build_cohort_graphs

    graphs = tmp_path / "wsi_only"
    build_cohort_graphs(small_cohort, graphs, progress=False, modalities=["wsi"])
    with pytest.raises(RadiopathInputError, match="manifest.csv.*field 'ct'.*no graph"):
        train_cross_validated(
            small_cohort,
            graphs,
            aggregator="mean",
            modalities="wsi,ct",
            out_dir=tmp_path / "run",
            config=FAST,
            progress=False,
        )


def test_missing_modalities_and_in_memory_graphs(tmp_path):
    from radiopath.datasets import make_synthetic_cohort

    csv = make_synthetic_cohort(
        tmp_path / "cohort",
        n_patients=16,
        dim=6,
        wsi_patches=(40, 80),
        ct_patches=(30, 60),
        missing_rate=0.5,
        seed=5,
        progress=False,
    )
    cohort = read_cohort(csv)
    lacking = [p.patient_id for p in cohort.patients if len(p.modalities) < 2]
    assert lacking
    result = train_cross_validated(
        csv,
        None,
        aggregator="sparra",
        modalities=["wsi", "ct"],
        out_dir=tmp_path / "run",
        config={**FAST, "epochs": 1},
        progress=False,
    )
    emb = result.embeddings(0)
    # Two presence columns follow the two modality vectors.
    assert emb.embedding.shape[1] == 2 * FAST["hidden"] + 2
    row = list(emb.patient_id).index(lacking[0])
    present = [bool(cohort[lacking[0]].files.get(m)) for m in ("wsi", "ct")]
    assert emb.embedding[row, -2:].tolist() == [float(p) for p in present]
    for m, has in zip(("wsi", "ct"), present):
        assert result.importance_path(lacking[0], m).exists() == has


def test_cli_train(small_cohort, small_graphs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        main,
        [
            "train",
            "--cohort",
            str(small_cohort),
            "--graphs",
            str(small_graphs),
            "--aggregator",
            "mean",
            "--modalities",
            "wsi",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--folds",
            "2",
            "--seed",
            "3",
            "--preset",
            "interpretable",
            "--importance",
            "selection",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "mean test C-index" in res.output
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["seed"] == 3 and record["config"]["modalities"] == ["wsi"]
    # the preset applies, the flag overrides it
    assert record["config"]["pooling"]["score_noise"] == 0.5
    assert record["config"]["importance"] == "selection"
    bad = runner.invoke(
        main,
        [
            "train",
            "--cohort",
            str(small_cohort),
            "--graphs",
            str(small_graphs),
            "--aggregator",
            "attention",
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert bad.exit_code == 2
    assert "aggregator" in bad.output and "attention" in bad.output


def test_discrete_time_head_and_gin_preset(small_cohort, small_graphs, tmp_path):
    result = train_cross_validated(
        small_cohort,
        small_graphs,
        aggregator="sparra",
        modalities="ct",
        out_dir=tmp_path,
        config={**FAST, "epochs": 1, "head": "discrete", "preset": "reference"},
        progress=False,
    )
    record = json.loads((tmp_path / "run.json").read_text())["config"]
    assert record["conv"]["ct"] == "gin" and record["ratio"]["ct"] == 0.7
    assert record["sparra"]["kl"] == "reference"
    emb = result.embeddings(1)
    assert np.isfinite(emb.risk).all() and (emb.risk < 0).all()  # minus expected bin count


def test_interpretable_preset_reexports_importance_from_the_same_checkpoints(
    small_cohort, small_graphs, tmp_path
):
    """``importance`` is a runtime key: rerunning a finished run with another mode
    re-traces the weights of the finished models (no retraining) and rewrites the maps;
    receptive-field maps keep each kept patch and add neighbours."""
    config = {**FAST, "preset": "interpretable"}
    kwargs = dict(aggregator="sparra", modalities="wsi", out_dir=tmp_path, progress=False)
    first = train_cross_validated(small_cohort, small_graphs, config=config, **kwargs)
    record = json.loads((tmp_path / "run.json").read_text())["config"]
    assert record["pooling"]["score_noise"] == 0.5 and record["pooling"]["lr_scale"] == 10.0
    assert record["importance"] == "receptive_field"
    pid = first.folds["patient_id"].iloc[0]
    receptive = pd.read_csv(first.importance_path(pid, "wsi"))["importance"].to_numpy()
    checkpoints = {p: p.stat().st_mtime_ns for p in (tmp_path / "checkpoints").glob("fold_*.pt")}
    second = train_cross_validated(
        small_cohort, small_graphs, config={**config, "importance": "selection"}, **kwargs
    )
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints  # not retrained
    assert second.fold_c_index == pytest.approx(first.fold_c_index)
    selection = pd.read_csv(second.importance_path(pid, "wsi"))["importance"].to_numpy()
    assert ((selection > 0) <= (receptive > 0)).all()
    assert (receptive > 0).sum() > (selection > 0).sum()


def test_truncated_export_of_a_finished_fold_is_written_again(finished_run, caplog):
    run, out = finished_run
    first = run()
    done = json.loads((out / "checkpoints" / "fold_0.done.json").read_text())
    assert "embeddings/fold_0.npz" in done["outputs"]
    assert any(k.startswith("importance/abmil/") for k in done["outputs"])
    npz = out / "embeddings" / "fold_0.npz"
    before = npz.read_bytes()
    npz.write_bytes(before[: len(before) // 2])
    imp = next(out / k for k in done["outputs"] if k.startswith("importance/"))
    imp_before = imp.read_text()
    imp.write_text(imp_before[:40])
    with caplog.at_level("WARNING"):
        again = run()
    assert "missing, truncated or changed" in caplog.text and "fold_0.npz" in caplog.text
    assert npz.read_bytes() == before and imp.read_text() == imp_before
    assert verify_digests(out, done["outputs"]) == []
    pd.testing.assert_frame_equal(again.risks, first.risks)
    # the log was not extended: the model came from the checkpoint, not retraining
    assert pd.read_csv(out / "logs" / "fold_0.csv")["epoch"].tolist() == [0, 1]


def test_corrupt_checkpoint_is_reported_and_the_fold_retrained(finished_run, caplog):
    run, out = finished_run
    first = run()
    ckpt = out / "checkpoints" / "fold_1.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    (out / "checkpoints" / "fold_1.done.json").unlink()
    with caplog.at_level("WARNING"):
        again = run()
    assert "fold_1.pt is unreadable" in caplog.text
    assert (out / "checkpoints" / "fold_1.pt.corrupt").exists()
    pd.testing.assert_frame_equal(again.risks, first.risks)  # retrained to the same result


def test_corrupt_ledger_is_not_trusted(finished_run):
    run, out = finished_run
    first = run()
    (out / "checkpoints" / "fold_0.done.json").write_text('{"fold": 0, "test_c')
    again = run()
    assert json.loads((out / "checkpoints" / "fold_0.done.json").read_text())["fold"] == 0
    pd.testing.assert_frame_equal(again.risks, first.risks)


# fusion runs: a fixed number of steps on the clinical cohort below
QUICK = {"steps": 24, "folds": 2, "batch_size": 8, "hidden": 8, "validation": {"fraction": 0.0}}


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
    # each member's fused width and presence columns, side by side
    assert emb.embedding.shape[1] == result.config.ensemble * (8 + 3)


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
        # without the default recipe's modality dropout, which trains every branch to
        # predict alone and so spreads the attention over the modalities by design
        config={
            "steps": 150,
            "folds": 3,
            "fusion": "attention",
            "validation": {"fraction": 0.0},
            "modality_dropout": 0.0,
        },
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
