"""CT: the MONAI chain on pydicom's and nibabel's shipped files, masks, patches."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radiopath.errors import RadiopathInputError
from radiopath.extract.ct import extract_ct, gather_patches, load_ct, patch_grid, patch_region
from radiopath.extract.encoders import MED3D_MEAN, MED3D_STD, get_encoder

NIBABEL_DATA = Path(os.path.dirname(nib.__file__)) / "tests" / "data"

CT_SMALL = get_testdata_file("CT_small.dcm")
NATIVE = (0.661468, 0.661468, 5.0)


def dicom_hu() -> np.ndarray:
    ds = pydicom.dcmread(CT_SMALL)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_dicom_file_gives_hounsfield_units_in_ras():
    ds = pydicom.dcmread(CT_SMALL)
    assert float(ds.RescaleIntercept) == -1024
    vol = load_ct(CT_SMALL, spacing=NATIVE)
    assert vol.image.shape == (128, 128, 1)
    assert vol.spacing == NATIVE
    # RAS: positive diagonal; DICOM's LPS rows/cols become x flipped, y flipped.
    assert np.all(np.diag(vol.affine)[:3] > 0)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    expected = np.clip(np.flip(dicom_hu().T, (0, 1)), -1024, 1024)
    np.testing.assert_allclose(vol.image[..., 0], expected, atol=1e-3)
    assert vol.image.min() >= -1024 and vol.image.max() <= 1024
    assert vol.image.min() == pytest.approx(dicom_hu().min())  # -896 HU: intercept applied


def test_med3d_normalisation_and_hu_clipping():
    hu = load_ct(CT_SMALL, spacing=NATIVE).image
    med = load_ct(CT_SMALL, spacing=NATIVE, normalisation="med3d")
    np.testing.assert_allclose(med.image, (hu - MED3D_MEAN) / MED3D_STD, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(med.hu(), hu, atol=1e-2)
    assert dicom_hu().max() > 1024 and hu.max() == 1024  # clipped


def test_dicom_series_is_stacked_by_position(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    base = pydicom.dcmread(CT_SMALL)
    for k in range(4):
        ds = pydicom.dcmread(CT_SMALL)
        x, y, z = (float(v) for v in base.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.SliceLocation = z + 5.0 * k
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.PixelData = (ds.pixel_array + 100 * k).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"slice{3 - k}.dcm")  # file names in reverse order
    vol = load_ct(folder, spacing=NATIVE)
    assert vol.image.shape == (128, 128, 4)
    # Slices follow the patient z axis (inferior -> superior), whatever the file order.
    means = vol.image.mean(axis=(0, 1))
    assert np.all(np.diff(means) > 50)
    assert vol.affine[2, 2] == pytest.approx(5.0)


def test_nifti_las_is_reoriented_and_resampled():
    path = NIBABEL_DATA / "anatomical.nii"
    src = nib.load(path)
    assert nib.aff2axcodes(src.affine) == ("L", "A", "S")
    data = np.asarray(src.get_fdata())
    vol = load_ct(path, spacing=(2.0, 2.0, 2.0))
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_allclose(vol.image, np.clip(data[::-1], -1024, 1024), atol=1e-3)
    # The same voxel is at the same place in the world before and after.
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], src.affine @ [32, 0, 0, 1], atol=1e-4)
    fine = load_ct(path, spacing=(1.0, 1.0, 1.0))
    np.testing.assert_allclose(np.diag(fine.affine)[:3], (1.0, 1.0, 1.0))
    assert fine.spacing == (1.0, 1.0, 1.0)
    assert all(abs(a - (2 * b - 1)) <= 1 for a, b in zip(fine.image.shape, data.shape))


def test_nifti_anisotropic_and_4d():
    vol = load_ct(NIBABEL_DATA / "standard.nii.gz", spacing=(1.0, 1.0, 1.0))
    src = nib.load(NIBABEL_DATA / "standard.nii.gz")
    assert src.header.get_zooms() == (1.0, 3.0, 2.0)
    np.testing.assert_allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), (1.0, 1.0, 1.0))
    assert vol.image.shape[0] == 4 and vol.image.shape[1] in (13, 14, 15)
    with pytest.warns(UserWarning, match="first volume"):
        v4 = load_ct(NIBABEL_DATA / "example4d.nii.gz", spacing=(2.0, 2.0, 2.0))
    assert v4.image.ndim == 3
    assert nib.aff2axcodes(v4.affine) == ("R", "A", "S")
    np.testing.assert_allclose(
        np.linalg.norm(v4.affine[:3, :3], axis=0), (2.0, 2.0, 2.0), atol=1e-4
    )
    assert v4.image.min() >= -1024 and v4.image.max() <= 1024


def phantom(tmp_path, mask_spacing=None):
    """A 48^3 body at 1 mm with a 12-voxel cubic tumour; optional mask on another grid."""
    hu = np.full((48, 48, 48), -1000, dtype=np.int16)
    hu[4:44, 4:44, 4:44] = 40
    tumour = np.zeros(hu.shape, dtype=np.uint8)
    tumour[20:32, 20:32, 20:32] = 1
    hu[tumour > 0] = 200
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    img = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu, aff), img)
    mask = tmp_path / "mask.nii.gz"
    if mask_spacing is None:
        nib.save(nib.Nifti1Image(tumour, aff), mask)
    else:  # the same tumour on a 2 mm grid
        coarse = tumour[::2, ::2, ::2]
        nib.save(nib.Nifti1Image(coarse, np.diag([2.0, 2.0, 2.0, 1.0])), mask)
    return img, mask


def test_tumour_mask_restricts_patches_to_tumour_and_margin(tmp_path):
    img, mask = phantom(tmp_path)
    enc = get_encoder("handcrafted", "ct")
    body = extract_ct(img, enc, patch_size=4, spacing=(1, 1, 1))
    tum = extract_ct(img, enc, mask=mask, patch_size=4, margin_mm=4.0, spacing=(1, 1, 1))
    assert len(tum.coords) < len(body.coords) / 5
    centres = tum.coords + 2.0
    # Every patch centre is within the margin (+ half a patch diagonal) of the tumour box.
    dist = np.maximum(np.maximum(20 - centres, centres - 32), 0)
    assert np.all(np.linalg.norm(dist, axis=1) <= 4.0 + 2 * np.sqrt(3))
    # Every patch inside the tumour is kept, and the tumour's HU shows in the features.
    inner = {
        (x, y, z) for x in range(20, 32, 4) for y in range(20, 32, 4) for z in range(20, 32, 4)
    }
    assert inner <= {tuple(c) for c in tum.coords.tolist()}
    is_inner = np.array([tuple(c) in inner for c in tum.coords.tolist()])
    np.testing.assert_allclose(tum.features[is_inner, 0], 2.0, atol=1e-4)  # mean HU / 100
    assert tum.extra_attrs["tumour_mask"] and tum.spacing == (1.0, 1.0, 1.0)
    # A mask on another grid is resampled onto the image's.
    (tmp_path / "coarse").mkdir()
    img2, mask2 = phantom(tmp_path / "coarse", mask_spacing=2.0)
    tum2 = extract_ct(img2, enc, mask=mask2, patch_size=4, margin_mm=4.0, spacing=(1, 1, 1))
    assert inner <= {tuple(c) for c in tum2.coords.tolist()}


def test_patch_grid_and_gather_read_back_the_voxels():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(21, 18, 10)).astype(np.float32)
    region = np.zeros(image.shape, dtype=bool)
    region[3:20, 2:15, 1:9] = True
    coords = patch_grid(region, 4, min_fraction=0.5)
    padded = np.pad(image, [(0, 3), (0, 2), (0, 2)], constant_values=-5.0)
    padded_region = np.pad(region, [(0, 3), (0, 2), (0, 2)])
    expected = {
        (x, y, z)
        for x in range(0, 24, 4)
        for y in range(0, 20, 4)
        for z in range(0, 12, 4)
        if padded_region[x : x + 4, y : y + 4, z : z + 4].mean() >= 0.5
    }
    assert {tuple(c) for c in coords.tolist()} == expected
    cubes = gather_patches(image, coords, 4, fill=-5.0)
    for (x, y, z), cube in zip(coords, cubes):
        np.testing.assert_array_equal(cube[0].numpy(), padded[x : x + 4, y : y + 4, z : z + 4])


def test_body_region_without_mask(tmp_path):
    img, _ = phantom(tmp_path)
    vol = load_ct(img, spacing=(1, 1, 1))
    region = patch_region(vol)
    assert region[4:44, 4:44, 4:44].all() and not region[:3].any()


def test_bad_ct_inputs_are_named(tmp_path):
    enc = get_encoder("handcrafted", "ct")
    with pytest.raises(RadiopathInputError, match="does not exist") as err:
        load_ct(tmp_path / "absent.nii.gz")
    assert "absent.nii.gz" in str(err.value)
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage" * 50)
    with pytest.raises(RadiopathInputError, match="cannot read") as err:
        load_ct(bad)
    assert "corrupt.nii.gz" in str(err.value) and "ct_image" in str(err.value)
    img, mask = phantom(tmp_path)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((48, 48, 48), np.uint8), np.eye(4)), empty)
    with pytest.raises(RadiopathInputError, match="mask is empty") as err:
        extract_ct(img, enc, mask=empty)
    assert "field 'ct_mask'" in str(err.value)
    with pytest.raises(RadiopathInputError, match="normalisation"):
        load_ct(img, normalisation="zscore")
