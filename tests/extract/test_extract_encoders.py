"""The encoder registry: names, checkpoints, optional packages, and what the encoders compute."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from radiopath.errors import RadiopathInputError
from radiopath.extract.encoders import (
    CT_HANDCRAFTED_FEATURES,
    HU_BANDS,
    WSI_HANDCRAFTED_FEATURES,
    SegVolEncoder,
    available_encoders,
    get_encoder,
    glcm_features,
)
from radiopath.runkit import file_identity


def test_unknown_encoder_lists_the_known_ones():
    with pytest.raises(RadiopathInputError) as err:
        get_encoder("resnet-9000", "wsi")
    msg = str(err.value)
    assert "unknown encoder 'resnet-9000'" in msg
    for name in ("handcrafted", "resnet18", "uni", "conch", "chief", "segvol"):
        assert name in msg
    assert set(available_encoders("ct")) == {"handcrafted", "resnet18", "segvol"}


def test_encoder_refuses_a_modality_it_does_not_encode():
    with pytest.raises(
        RadiopathInputError,
        match="'segvol' does not encode 'wsi'.*encoders for wsi: chief, conch, handcrafted",
    ):
        get_encoder("segvol", "wsi", random_init=True)


def test_weights_are_required_and_never_downloaded(tmp_path):
    with pytest.raises(RadiopathInputError, match="no checkpoint was given.*--checkpoint"):
        get_encoder("resnet18", "wsi")
    missing = tmp_path / "weights" / "resnet18.pth"
    with pytest.raises(RadiopathInputError) as err:
        get_encoder("resnet18", "ct", checkpoint=missing)
    assert "resnet18.pth" in str(err.value) and "does not exist" in str(err.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(RadiopathInputError, match="not a readable PyTorch checkpoint") as err:
        get_encoder("resnet18", "wsi", checkpoint=garbage)
    assert "garbage.pth" in str(err.value)


@pytest.mark.parametrize(
    "name,package,modality",
    [
        ("uni", "timm", "wsi"),
        ("chief", "timm", "wsi"),
        ("conch", "conch", "wsi"),
        ("segvol", "einops", "ct"),
    ],
)
def test_foundation_models_name_their_missing_package(name, package, modality, tmp_path):
    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    with pytest.raises(RadiopathInputError) as err:
        get_encoder(name, modality, checkpoint=tmp_path / "absent.bin")
    msg = str(err.value)
    assert f"'{package}'" in msg and "not installed" in msg
    assert "absent.bin" in msg  # both problems are reported at once


@pytest.mark.parametrize(
    "modality,shape", [("wsi", (3, 2, 3, 48, 48)), ("ct", (3, 2, 1, 16, 16, 16))]
)
def test_resnet18_checkpoint_round_trip(tmp_path, modality, shape):
    torch.manual_seed(0)
    source = get_encoder("resnet18", modality, random_init=True)
    state = {f"module.{k}": v for k, v in source.model.state_dict().items()}  # DataParallel keys
    state["module.fc.weight"] = torch.zeros(400, 512)  # a classifier head is ignored
    ckpt = tmp_path / "weights.pth"
    torch.save({"state_dict": state}, ckpt)
    torch.manual_seed(1)
    loaded = get_encoder("resnet18", modality, checkpoint=ckpt)
    fresh = get_encoder("resnet18", modality, random_init=True)
    if modality == "wsi":
        x = torch.randint(0, 256, shape[1:], dtype=torch.uint8)
    else:
        x = torch.rand(shape[1:]) * 2000 - 1000
    out = loaded.encode(x)
    assert out.shape == (2, 512)
    torch.testing.assert_close(out, source.encode(x))
    assert not torch.allclose(out, fresh.encode(x))
    assert loaded.config()["checkpoint"] == file_identity(ckpt)


def test_unknown_encoder_options_are_named():
    with pytest.raises(RadiopathInputError, match="'handcrafted' does not take option.*input_size"):
        get_encoder("handcrafted", "wsi", input_size=224)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    ct_model = get_encoder("resnet18", "ct", random_init=True)
    ckpt = tmp_path / "ct_weights.pth"
    torch.save(ct_model.model.state_dict(), ckpt)
    with pytest.raises(
        RadiopathInputError, match="checkpoint does not fit ResNet.*another shape"
    ) as err:
        get_encoder("resnet18", "wsi", checkpoint=ckpt)
    assert "ct_weights.pth" in str(err.value)


def test_segvol_style_encoder_loads_a_wrapped_checkpoint_with_another_grid(tmp_path):
    pytest.importorskip("einops")  # MONAI's ViT needs it
    small = dict(
        img_size=(8, 16, 16),
        patch_size=(4, 8, 8),
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=4,
    )
    torch.manual_seed(0)
    big = SegVolEncoder(**{**small, "img_size": (16, 32, 32)})
    ckpt = tmp_path / "segvol.pth"
    torch.save(
        {
            "model": {
                f"module.model.image_encoder.{k}": v for k, v in big.model.state_dict().items()
            }
        },
        ckpt,
    )
    enc = get_encoder("segvol", "ct", checkpoint=ckpt, **small)
    grid_pos = enc.model.patch_embedding.position_embeddings
    assert grid_pos.shape == (1, 2 * 2 * 2, 32)
    torch.testing.assert_close(
        enc.model.blocks[0].mlp.linear1.weight, big.model.blocks[0].mlp.linear1.weight
    )
    out = enc.encode(torch.rand(3, 1, 12, 12, 12) * 2000 - 1000)
    assert out.shape == (3, 32) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- hand-crafted


def naive_glcm(q: np.ndarray, levels: int, offsets) -> np.ndarray:
    """Haralick statistics with explicit loops over pixel pairs (independent reference)."""
    P = np.zeros((levels, levels))
    for off in offsets:
        for idx in np.ndindex(q.shape):
            jdx = tuple(i + o for i, o in zip(idx, off))
            if all(j < s for j, s in zip(jdx, q.shape)):
                P[q[idx], q[jdx]] += 1
                P[q[jdx], q[idx]] += 1
    P /= P.sum()
    i, j = np.indices(P.shape)
    mi, mj = (P * i).sum(), (P * j).sum()
    si, sj = np.sqrt((P * (i - mi) ** 2).sum()), np.sqrt((P * (j - mj) ** 2).sum())
    nz = P[P > 0]
    return np.array(
        [
            (P * (i - j) ** 2).sum() / (levels - 1) ** 2,
            (P * np.abs(i - j)).sum() / (levels - 1),
            (P / (1 + (i - j) ** 2)).sum(),
            (P**2).sum(),
            (P * (i - mi) * (j - mj)).sum() / (si * sj),
            -(nz * np.log(nz)).sum() / np.log(levels**2),
        ]
    )


def test_glcm_matches_a_loop_implementation():
    rng = np.random.default_rng(0)
    q2 = rng.integers(0, 5, size=(2, 9, 7))
    got = glcm_features(torch.from_numpy(q2), 5, [(0, 1), (1, 0), (1, 1)]).numpy()
    for b in range(2):
        np.testing.assert_allclose(
            got[b], naive_glcm(q2[b], 5, [(0, 1), (1, 0), (1, 1)]), rtol=1e-5
        )
    q3 = rng.integers(0, 4, size=(1, 5, 6, 4))
    got = glcm_features(torch.from_numpy(q3), 4, [(1, 0, 0), (0, 1, 0), (0, 0, 1)]).numpy()
    np.testing.assert_allclose(
        got[0], naive_glcm(q3[0], 4, [(1, 0, 0), (0, 1, 0), (0, 0, 1)]), rtol=1e-5
    )


@pytest.mark.parametrize("size", [32, 128])
def test_handcrafted_wsi_features_match_numpy(size):
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, size=(4, 3, size, size), dtype=np.uint8)
    tiles[1] = 240  # flat glass
    enc = get_encoder("handcrafted", "wsi")
    feats = enc.encode(torch.from_numpy(tiles)).numpy()
    assert feats.shape == (4, len(WSI_HANDCRAFTED_FEATURES)) and np.isfinite(feats).all()
    f = {n: feats[:, i] for i, n in enumerate(WSI_HANDCRAFTED_FEATURES)}
    rgb = tiles.astype(np.float64) / 255
    # Colour statistics of large tiles come from every other pixel; texture from all.
    colour = rgb[..., ::2, ::2] if size >= 64 else rgb
    np.testing.assert_allclose(f["g_mean"], colour[:, 1].mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(f["b_sd"], colour[:, 2].std(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    mx, mn = colour.max(1), colour.min(1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0)
    np.testing.assert_allclose(f["sat_mean"], sat.mean(axis=(1, 2)), rtol=1e-4, atol=1e-6)
    # Flat glass: no texture, no stain, no tissue.
    assert f["grad_mean"][1] == pytest.approx(0, abs=1e-6) and f["glcm_contrast"][1] == 0
    assert f["tissue_fraction"][1] == 0 and f["h_mean"][1] < 0.05
    grey = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    padded = np.pad(grey[0], 1, mode="edge")
    gx = (
        (padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:])
        - (padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2])
    ) / 8
    gy = (
        (padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:])
        - (padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:])
    ) / 8
    np.testing.assert_allclose(f["grad_mean"][0], 4 * np.hypot(gx, gy).mean(), rtol=1e-4)
    q = np.clip((grey * 8).astype(int), 0, 7)
    if size == 32:  # the loop reference is slow on large tiles
        np.testing.assert_allclose(
            feats[0, -6:], naive_glcm(q[0], 8, [(0, 1), (1, 0), (1, 1)]), rtol=1e-4
        )


def test_handcrafted_wsi_separates_stains():
    """A haematoxylin-rich (purple) tile has more H and nuclei than an eosin (pink) one."""
    purple = (
        np.zeros((1, 3, 16, 16), dtype=np.uint8) + np.array([90, 60, 140], np.uint8)[:, None, None]
    )
    pink = (
        np.zeros((1, 3, 16, 16), dtype=np.uint8)
        + np.array([230, 160, 195], np.uint8)[:, None, None]
    )
    enc = get_encoder("handcrafted", "wsi")
    f = enc.encode(torch.from_numpy(np.concatenate([purple, pink]))).numpy()
    h = WSI_HANDCRAFTED_FEATURES.index("h_mean")
    nuc = WSI_HANDCRAFTED_FEATURES.index("nuclear_fraction")
    assert f[0, h] > f[1, h] + 0.2 and f[0, nuc] == 1 and f[1, nuc] == 0


def test_handcrafted_ct_features_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1024, 1024, size=(3, 1, 8, 8, 8)).astype(np.float32)
    x[2] = 40.0  # flat soft tissue
    enc = get_encoder("handcrafted", "ct")
    feats = enc.encode(torch.from_numpy(x)).numpy()
    assert feats.shape == (3, len(CT_HANDCRAFTED_FEATURES)) and np.isfinite(feats).all()
    f = {n: feats[:, i] for i, n in enumerate(CT_HANDCRAFTED_FEATURES)}
    flat = x.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(f["hu_mean"], flat.mean(1) / 100, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f["hu_sd"], flat.std(1) / 100, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f["hu_p75"], np.quantile(flat, 0.75, axis=1) / 100, rtol=1e-4)
    for name, (lo, hi) in zip(
        ("frac_air", "frac_lung", "frac_fat", "frac_soft", "frac_enhancing", "frac_dense"), HU_BANDS
    ):
        np.testing.assert_allclose(f[name], ((flat >= lo) & (flat < hi)).mean(1), atol=1e-6)
    assert f["frac_soft"][2] == 1 and f["hist_entropy"][2] == 0
    assert f["grad_mean"][2] == pytest.approx(0, abs=1e-6)
    q = np.clip(np.floor((x[0, 0] + 160) / 400 * 16).astype(int), 0, 15)
    np.testing.assert_allclose(
        feats[0, -6:], naive_glcm(q, 16, [(1, 0, 0), (0, 1, 0), (0, 0, 1)]), rtol=1e-4
    )
