"""The synthetic cohort: contract, determinism, censoring, and a planted signal that is real."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from sklearn.model_selection import StratifiedKFold
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from radiopath.datasets import (
    SyntheticConfig,
    _contiguous_regions,
    _grid_points,
    load_planted_mask,
    load_truth,
    make_synthetic_cohort,
)
from radiopath.errors import RadiopathInputError
from radiopath.io import read_cohort, read_embeddings


def digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in (".csv", ".npy"):
            h.update(f.read_bytes())
    for f in sorted(folder.rglob("*.h5")):
        bag = read_embeddings(f)
        h.update(bag.features.tobytes() + bag.coords.tobytes())
    return h.hexdigest()


def test_contract_and_shapes(small_cohort):
    cohort = read_cohort(small_cohort, strict=True)
    assert len(cohort) == 24
    assert cohort.modalities == ["wsi", "ct"]
    assert cohort.clinical_columns == ["age", "sex", "stage"]
    for p in cohort.patients:
        wsi = read_embeddings(p.files["wsi"][0])
        ct = read_embeddings(p.files["ct"][0])
        assert wsi.coords.shape[1] == 2 and ct.coords.shape[1] == 3
        assert wsi.dim == ct.dim == 8
        # the shape-fitting grid lands near the asked range
        assert 60 <= wsi.num_patches <= 400 and 40 <= ct.num_patches <= 300
        assert wsi.mpp == 0.5 and ct.spacing == (0.8, 0.8, 2.5)
        assert len(np.unique(wsi.coords, axis=0)) == wsi.num_patches
        mask = load_planted_mask(small_cohort.parent, p.patient_id, "wsi")
        assert mask.shape == (wsi.num_patches,) and 0 < mask.sum() < wsi.num_patches


def test_deterministic_given_seed(tmp_path):
    kw = dict(n_patients=6, dim=4, wsi_patches=(50, 80), ct_patches=(40, 60), progress=False)
    a = make_synthetic_cohort(tmp_path / "a", seed=7, **kw).parent
    b = make_synthetic_cohort(tmp_path / "b", seed=7, **kw).parent
    c = make_synthetic_cohort(tmp_path / "c", seed=8, **kw).parent
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_censoring_rate_and_missing_modalities(tmp_path):
    csv = make_synthetic_cohort(
        tmp_path,
        n_patients=300,
        dim=2,
        wsi_patches=(16, 20),
        ct_patches=(16, 20),
        censoring=0.4,
        missing_rate=0.3,
        seed=1,
        progress=False,
    )
    table = pd.read_csv(csv)
    assert abs((1 - table.event.mean()) - 0.4) < 0.07
    missing = table.wsi.isna() | table.ct.isna()
    assert abs(missing.mean() - 0.3) < 0.08
    assert not (table.wsi.isna() & table.ct.isna()).any()
    cohort = read_cohort(csv, strict=True)
    assert len(cohort) == 300


def test_signal_placement_wsi_only(tmp_path):
    csv = make_synthetic_cohort(
        tmp_path,
        n_patients=8,
        dim=4,
        wsi_patches=(50, 60),
        ct_patches=(40, 50),
        signal="wsi",
        seed=2,
        progress=False,
    )
    truth = load_truth(csv.parent)
    assert truth.ct_factor.isna().all() and truth.wsi_factor.notna().all()
    for pid in truth.patient_id:
        assert load_planted_mask(csv.parent, pid, "ct").sum() == 0
        assert load_planted_mask(csv.parent, pid, "wsi").sum() > 0


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(RadiopathInputError, match="field 'signal'"):
        make_synthetic_cohort(tmp_path, signal="liver", progress=False)
    with pytest.raises(RadiopathInputError, match="field 'censoring'"):
        SyntheticConfig(censoring=1.2).validate()
    with pytest.raises(RadiopathInputError, match="field 'region_shape'"):
        SyntheticConfig(region_shape="star").validate()


def _shape_stats(points, mask):
    """Long over short axis (square root of the covariance's eigenvalue ratio) and number of
    connected pieces (cells touching, diagonals included) of the masked points."""
    c = points[mask]
    ev = np.linalg.eigvalsh(np.cov(c.T))
    tree = cKDTree(c)
    adjacency = tree.sparse_distance_matrix(tree, 1.01 * np.sqrt(c.shape[1]))
    return np.sqrt(ev[-1] / ev[0]), connected_components(adjacency)[0]


@pytest.mark.parametrize("ndim", [2, 3])
def test_region_shapes(ndim):
    """Balls are round and whole, elongated regions are several times longer than wide and
    whole, scattered regions break into several foci; each has the asked size and avoids the
    excluded patches."""
    rng = np.random.default_rng(0)
    stats = {shape: [] for shape in ("ball", "elongated", "scattered")}
    for _ in range(12):
        points = _grid_points(rng, 3000, ndim).astype(float)
        exclude = _contiguous_regions(rng, points, 150, 1)
        for shape, found in stats.items():
            mask = _contiguous_regions(rng, points, 300, 1, exclude, shape)
            assert mask.sum() == 300 and not (mask & exclude).any()
            found.append(_shape_stats(points, mask))
    ratio = {shape: np.median([r for r, _ in found]) for shape, found in stats.items()}
    pieces = {shape: np.median([k for _, k in found]) for shape, found in stats.items()}
    assert ratio["ball"] < 2.0 and ratio["elongated"] > 2.5, ratio
    assert pieces["ball"] == 1 and pieces["elongated"] == 1 and pieces["scattered"] >= 3, pieces


def _cv_cindex(X, time, event, seed=0):
    """Out-of-fold Harrell C-index of a ridge Cox model (5-fold, stratified by event)."""
    y = Surv.from_arrays(event.astype(bool), time)
    risk = np.zeros(len(time))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, event):
        model = CoxPHSurvivalAnalysis(alpha=1.0).fit(X[train], y[train])
        risk[test] = model.predict(X[test])
    return concordance_index_censored(event.astype(bool), time, risk)[0]


@pytest.mark.parametrize("modality", ["wsi", "ct"])
def test_planted_signal_is_real_and_local(tmp_path_factory, modality):
    """Cox on the planted region's mean embedding predicts; a random region of the same size does not."""
    out = tmp_path_factory.mktemp(f"signal_{modality}")
    csv = make_synthetic_cohort(
        out,
        n_patients=150,
        dim=16,
        wsi_patches=(300, 600),
        ct_patches=(200, 400),
        seed=11,
        confounder=0.0,
        decoy=False,
        progress=False,
    )
    cohort = read_cohort(csv)
    rng = np.random.default_rng(0)
    planted_means, random_means = [], []
    for p in cohort.patients:
        bag = read_embeddings(p.files[modality][0])
        mask = load_planted_mask(csv.parent, p.patient_id, modality)
        planted_means.append(bag.features[mask].mean(0))
        region = _contiguous_regions(rng, bag.coords.astype(float), int(mask.sum()), 1)
        random_means.append(bag.features[region].mean(0))
    c_planted = _cv_cindex(np.array(planted_means), cohort.times, cohort.events)
    c_random = _cv_cindex(np.array(random_means), cohort.times, cohort.events)
    assert c_planted >= 0.75, c_planted
    assert c_random < 0.65, c_random


@pytest.mark.parametrize("shape", ["ball", "elongated", "scattered"])
def test_confounded_cohort_ceilings(tmp_path, shape):
    """By default the bag mean is confounded: the written ceilings put the oracle on the planted
    regions well above mean pooling, and an independent computation agrees that the planted
    regions read against their bag carry the signal while the bag mean does not, whatever the
    regions' shape."""
    csv = make_synthetic_cohort(
        tmp_path,
        n_patients=150,
        dim=16,
        wsi_patches=(300, 600),
        ct_patches=(200, 400),
        region_shape=shape,
        seed=3,
        progress=False,
    )
    ceilings = json.loads((csv.parent / "ceilings.json").read_text())
    assert ceilings["true_risk"] > ceilings["oracle_region_mean"]
    assert ceilings["oracle_region_mean"] >= ceilings["mean_pooling"] + 0.08, ceilings
    cohort = read_cohort(csv)
    contrast, bag_mean = [], []
    for p in cohort.patients:
        feats = [read_embeddings(p.files[m][0]).features for m in ("wsi", "ct")]
        masks = [load_planted_mask(csv.parent, p.patient_id, m) for m in ("wsi", "ct")]
        decoys = [
            np.load(csv.parent / "truth" / f"{p.patient_id}.{m}.decoy.npy") for m in ("wsi", "ct")
        ]
        assert all(not (mk & d).any() and d.any() for mk, d in zip(masks, decoys))
        contrast.append(np.concatenate([f[mk].mean(0) - f.mean(0) for f, mk in zip(feats, masks)]))
        bag_mean.append(np.concatenate([f.mean(0) for f in feats]))
    assert _cv_cindex(np.array(contrast), cohort.times, cohort.events) >= 0.75
    assert _cv_cindex(np.array(bag_mean), cohort.times, cohort.events) < 0.62
