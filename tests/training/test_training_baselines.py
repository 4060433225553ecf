"""raw_mean: the untrained mean of the raw patch embeddings, in the evaluation's format."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from radiopath.errors import RadiopathInputError
from radiopath.io import read_cohort, read_fold_embeddings
from radiopath.training.baselines import train_raw_mean
from radiopath.training.folds import read_folds


def _bag_mean(paths) -> np.ndarray:
    features = []
    for p in paths:
        with h5py.File(p, "r") as f:
            features.append(np.asarray(f["features"], dtype=np.float64))
    return np.concatenate(features).mean(axis=0)


def test_raw_mean_is_the_numpy_mean_of_each_bag(small_cohort, tmp_path):
    out = train_raw_mean(
        small_cohort,
        modalities="wsi,ct",
        out_dir=tmp_path / "raw",
        n_folds=3,
        repeats=2,
        progress=False,
    )
    cohort = read_cohort(small_cohort)
    folds = read_folds(out / "folds.csv")
    assert sorted(folds["fold"].unique()) == list(range(6))
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["aggregator"] == "raw_mean" and record["status"] == "finished"
    for k in range(6):
        emb = read_fold_embeddings(out / "embeddings" / f"fold_{k}.npz")
        assert set(emb.patient_id[emb.split == "test"]) == set(
            folds.loc[folds.fold == k, "patient_id"]
        )
        assert emb.risk is None
        for pid, vector in zip(emb.patient_id, emb.embedding):
            p = cohort[pid]
            wsi, ct = _bag_mean(p.files["wsi"]), _bag_mean(p.files["ct"])
            assert vector.shape == (wsi.size + ct.size,)  # no indicator: nobody misses one
            np.testing.assert_allclose(vector, np.concatenate([wsi, ct]), rtol=1e-6, atol=1e-6)


def test_missing_modality_gets_the_training_mean_and_an_indicator(small_cohort, tmp_path):
    table = pd.read_csv(small_cohort)
    lacking = str(table.loc[0, "patient_id"])
    table.loc[0, "ct"] = ""
    csv = small_cohort.parent / "one_without_ct.csv"
    table.to_csv(csv, index=False)
    out = train_raw_mean(
        csv, modalities=["wsi", "ct"], out_dir=tmp_path / "raw", n_folds=2, progress=False
    )
    cohort = read_cohort(csv)
    for k in (0, 1):
        emb = read_fold_embeddings(out / "embeddings" / f"fold_{k}.npz")
        d_wsi = _bag_mean(cohort[lacking].files["wsi"]).size
        d_ct = (emb.embedding.shape[1] - 2) - d_wsi
        i = list(emb.patient_id).index(lacking)
        train = [
            j for j, s in enumerate(emb.split) if s == "train" and emb.patient_id[j] != lacking
        ]
        ct_train = np.array([_bag_mean(cohort[emb.patient_id[j]].files["ct"]) for j in train])
        np.testing.assert_allclose(
            emb.embedding[i, d_wsi : d_wsi + d_ct], ct_train.mean(0), rtol=1e-5, atol=1e-6
        )
        assert emb.embedding[i, -2:].tolist() == [1.0, 0.0]  # wsi present, ct missing
        assert (np.delete(emb.embedding[:, -1], i) == 1).all()


def test_raw_mean_refuses_non_imaging_modalities(small_cohort, tmp_path):
    with pytest.raises(RadiopathInputError, match="field 'modalities'"):
        train_raw_mean(
            small_cohort, modalities=["clinical"], out_dir=tmp_path / "r", progress=False
        )
