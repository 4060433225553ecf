"""Embedding files (radiopath/embeddings.py): round trips, the CLAM layout, and every kind of
bad file, with messages that name the file and the field."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from bag_helpers import make_bag

from radiopath.embeddings import read_embeddings, write_embeddings
from radiopath.errors import RadiopathInputError


def write_raw(path, features, coords, **attrs):
    with h5py.File(path, "w") as fh:
        fh.create_dataset("features", data=features)
        fh.create_dataset("coords", data=coords)
        for k, v in attrs.items():
            fh.attrs[k] = v
    return path


@pytest.mark.parametrize("modality", ["wsi", "ct"])
def test_embedding_round_trip(tmp_path, modality):
    bag = make_bag(modality)
    path = write_embeddings(tmp_path / "bag.h5", bag)
    back = read_embeddings(path)
    np.testing.assert_array_equal(back.features, bag.features)
    np.testing.assert_array_equal(back.coords, bag.coords)
    assert back.modality == modality
    assert back.patch_size == bag.patch_size
    assert back.mpp == bag.mpp
    assert back.spacing == bag.spacing
    assert back.encoder == "test"


def test_reads_clam_layout_without_modality(tmp_path):
    """CLAM writes [1, N, D] features and no modality attribute: infer it with a warning."""
    rng = np.random.default_rng(0)
    path = write_raw(
        tmp_path / "clam.h5",
        rng.normal(size=(1, 5, 3)).astype(np.float32),
        rng.integers(0, 99, size=(5, 2)),
    )
    with pytest.warns(UserWarning, match="inferred 'wsi'"):
        bag = read_embeddings(path)
    assert bag.modality == "wsi" and bag.features.shape == (5, 3)


def test_physical_coords_use_resolution():
    bag = make_bag("ct", n=3)
    expected = (bag.coords + 4) * np.array([0.8, 0.8, 2.5])
    np.testing.assert_allclose(bag.physical_coords, expected)
    assert bag.units == "mm"


@pytest.mark.parametrize(
    "features, coords, attrs, field, message",
    [
        (
            np.zeros((5, 3), np.float32),
            np.zeros((4, 2)),
            {"modality": "wsi"},
            "coords",
            "5 rows but coords has 4",
        ),
        (
            np.zeros((5, 3), np.float32),
            np.zeros((5, 2)),
            {"modality": "ct"},
            "coords",
            "needs 3-D coordinates",
        ),
        (
            np.zeros((5, 3), np.float32),
            np.zeros((5, 3)),
            {"modality": "wsi"},
            "coords",
            "needs 2-D coordinates",
        ),
        (
            np.zeros((5, 3), np.float32),
            np.zeros((5, 2)),
            {"modality": "mri"},
            "modality",
            "unknown modality",
        ),
        (
            np.array([[0, np.nan, 0]] * 5, np.float32),
            np.zeros((5, 2)),
            {"modality": "wsi"},
            "features",
            "NaN or inf",
        ),
        (
            np.array([[0, np.inf, 0]] * 5, np.float32),
            np.zeros((5, 2)),
            {"modality": "wsi"},
            "features",
            "NaN or inf",
        ),
    ],
)
def test_bad_embedding_files_name_file_and_field(tmp_path, features, coords, attrs, field, message):
    path = write_raw(tmp_path / "bad.h5", features, coords, **attrs)
    with pytest.raises(RadiopathInputError, match=message) as info:
        read_embeddings(path)
    assert str(path) in str(info.value)
    assert f"field '{field}'" in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(RadiopathInputError, match="does not exist") as info:
        read_embeddings(tmp_path / "nope.h5")
    assert "nope.h5" in str(info.value)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(RadiopathInputError, match="not a readable HDF5"):
        read_embeddings(junk)
    nofeat = tmp_path / "nofeat.h5"
    with h5py.File(nofeat, "w") as fh:
        fh.create_dataset("coords", data=np.zeros((3, 2)))
    with pytest.raises(RadiopathInputError, match="field 'features'"):
        read_embeddings(nofeat)


def test_modality_mismatch_with_cohort_column(tmp_path):
    path = write_embeddings(tmp_path / "b.h5", make_bag("ct"))
    with pytest.raises(RadiopathInputError, match="listed as 'wsi'"):
        read_embeddings(path, modality="wsi")
