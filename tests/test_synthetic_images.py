"""The synthetic image cohort: real files OpenSlide / nibabel read, the planted signal in the pixels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import openslide
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from radiopath.errors import RadiopathInputError
from radiopath.extract.encoders import CT_HANDCRAFTED_FEATURES, WSI_HANDCRAFTED_FEATURES
from radiopath.io import read_cohort, read_embeddings
from radiopath.synthetic_images import (
    ImageCohortConfig,
    make_synthetic_image_cohort,
    planted_patch_fraction,
)


def test_files_are_real_slides_and_volumes(image_cohort):
    table = pd.read_csv(image_cohort)
    root = image_cohort.parent
    assert list(table.columns) == [
        "patient_id",
        "time",
        "event",
        "wsi_image",
        "ct_image",
        "ct_mask",
        "age",
        "sex",
        "stage",
    ]
    assert (table.time > 0).all() and table.event.isin([0, 1]).all() and table.event.any()
    slide = openslide.OpenSlide(root / table.wsi_image[0])
    assert slide.properties[openslide.PROPERTY_NAME_VENDOR] == "generic-tiff"
    assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(1.0)
    assert slide.dimensions == (768, 768) and slide.level_count >= 3
    assert slide.level_downsamples[1] == pytest.approx(2.0)
    ct = nib.load(root / table.ct_image[0])
    assert ct.shape == (40, 40, 24) and nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    np.testing.assert_allclose(ct.header.get_zooms(), (1.5, 1.5, 2.5))
    hu = np.asarray(ct.dataobj)
    assert (
        hu.min() <= -900
        and 20 < np.median(hu[np.asarray(nib.load(root / table.ct_mask[0]).dataobj) > 0]) < 200
    )


def test_truth_follows_the_latent_factor(image_cohort):
    truth = pd.read_csv(image_cohort.parent / "truth.csv")
    np.testing.assert_allclose(truth.eta, 1.5 * truth.wsi_factor)
    np.testing.assert_allclose(truth.wsi_factor, truth.ct_factor)
    lo, hi = ImageCohortConfig.extent
    for col in ("wsi_planted_fraction", "ct_planted_fraction"):
        assert truth[col].between(lo * 0.8, hi * 1.2).all()
        assert spearmanr(truth[col], truth.eta).statistic > 0.95


def test_planted_region_is_visible_to_the_handcrafted_encoder(image_cohort, extracted_cohort):
    cohort = read_cohort(extracted_cohort, strict=True)
    truth = pd.read_csv(image_cohort.parent / "truth.csv", dtype={"patient_id": str})
    h = WSI_HANDCRAFTED_FEATURES.index("nuclear_fraction")
    dense = CT_HANDCRAFTED_FEATURES.index("frac_enhancing")
    labels = {"wsi": [], "ct": []}
    scores = {"wsi": [], "ct": []}
    estimate = []
    for p in cohort.patients:
        wsi = read_embeddings(p.files["wsi"][0])
        ct = read_embeddings(p.files["ct"][0])
        for bag, col, key in ((wsi, h, "wsi"), (ct, dense, "ct")):
            frac = planted_patch_fraction(image_cohort.parent, p.patient_id, bag)
            assert frac.shape == (bag.num_patches,) and (frac >= 0).all() and (frac <= 1).all()
            clear = (frac > 0.75) | (frac == 0)
            labels[key].append(frac[clear] > 0.75)
            scores[key].append(bag.features[clear, col])
        # The share of nucleus-dense tiles, read from the features alone, tracks the factor.
        estimate.append(float(np.mean(wsi.features[:, h] > 0.3)))
    for key in ("wsi", "ct"):
        assert roc_auc_score(np.concatenate(labels[key]), np.concatenate(scores[key])) > 0.97
    eta = truth.set_index("patient_id").loc[cohort.patient_ids, "eta"]
    assert spearmanr(estimate, eta).statistic > 0.8


def test_same_seed_same_cohort(tmp_path):
    small = dict(n_patients=4, slide_size=256, ct_shape=(24, 24, 16), progress=False)
    a = make_synthetic_image_cohort(tmp_path / "a", seed=1, **small)
    b = make_synthetic_image_cohort(tmp_path / "b", seed=1, **small)
    c = make_synthetic_image_cohort(tmp_path / "c", seed=2, **small)
    pd.testing.assert_frame_equal(pd.read_csv(a), pd.read_csv(b))
    assert not pd.read_csv(a).time.equals(pd.read_csv(c).time)
    sa = openslide.OpenSlide(a.parent / "images" / "SYNI0000.wsi.tiff")
    sb = openslide.OpenSlide(b.parent / "images" / "SYNI0000.wsi.tiff")
    np.testing.assert_array_equal(
        np.asarray(sa.read_region((0, 0), 0, (256, 256))),
        np.asarray(sb.read_region((0, 0), 0, (256, 256))),
    )


def test_masks_can_be_left_out_and_config_is_validated(tmp_path):
    csv = make_synthetic_image_cohort(
        tmp_path / "m",
        n_patients=4,
        slide_size=256,
        ct_shape=(24, 24, 16),
        mask_rate=0.0,
        progress=False,
    )
    assert pd.read_csv(csv).ct_mask.isna().all()
    with pytest.raises(RadiopathInputError, match="field 'n_patients'"):
        make_synthetic_image_cohort(tmp_path / "x", n_patients=2)
    with pytest.raises(RadiopathInputError, match="field 'signal'"):
        make_synthetic_image_cohort(tmp_path / "x", signal="pixels")
