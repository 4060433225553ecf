"""The gallery shows the right patients, on one colour scale, with working links."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps
from PIL import Image

from radiopath.report.gallery import (
    CMAP,
    build_gallery,
    choose_patients,
    colorize,
    risk_percentiles,
    wsi_panel,
)


def _predictions(risks: dict[int, dict[str, float]], models=("coxph", "rsf")) -> pd.DataFrame:
    rows = []
    for fold, by_patient in risks.items():
        for m in models:
            for pid, r in by_patient.items():
                rows.append(
                    {
                        "aggregator": "sparra",
                        "modalities": "wsi",
                        "model": m,
                        "fold": fold,
                        "patient_id": pid,
                        "time": 10.0,
                        "event": 1,
                        "risk": r if m == "coxph" else 100 * r,  # other scale, same order
                    }
                )
    return pd.DataFrame(rows)


def test_highest_median_and_lowest_risk_of_each_fold():
    preds = _predictions(
        {
            0: {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.3, "e": 0.7},
            1: {"f": 2.0, "g": -1.0, "h": 0.0, "i": 1.0},
        }
    )
    chosen = choose_patients(preds)
    got = {(r.fold, r.role): r.patient_id for r in chosen.itertuples()}
    # fold 0 ordered b d c e a: median c; fold 1 ordered g h i f: lower median h
    assert got == {
        (0, "highest"): "a",
        (0, "median"): "c",
        (0, "lowest"): "b",
        (1, "highest"): "f",
        (1, "median"): "h",
        (1, "lowest"): "g",
    }


def test_patients_without_maps_and_later_repeats_are_not_chosen():
    preds = _predictions({0: {"a": 0.9, "b": 0.1, "c": 0.5}, 1: {"a": 0.2, "b": 0.8, "c": 0.4}})
    folds = pd.DataFrame(
        {"patient_id": ["a", "b", "c"] * 2, "repeat": [0] * 3 + [1] * 3, "fold": [0] * 3 + [1] * 3}
    )
    chosen = choose_patients(preds, available={"b", "c"}, folds=folds)
    assert set(chosen.fold) == {0}
    assert dict(zip(chosen.role, chosen.patient_id)) == {"highest": "c", "lowest": "b"}


def test_risk_percentile_is_the_rank_within_fold_aggregator_and_model():
    preds = _predictions({0: {"a": 3.0, "b": 1.0, "c": 2.0, "d": 0.0}})
    pct = risk_percentiles(preds).groupby("patient_id").pct.mean()
    assert pct.to_dict() == {"a": 1.0, "b": 0.5, "c": 0.75, "d": 0.25}


def test_colours_follow_the_colour_map_and_missing_cells_are_background():
    grid = np.array([[0.0, 1.0], [np.nan, 0.5]])
    rgb = colorize(grid, 0.0, 1.0)
    cmap = colormaps[CMAP]
    assert tuple(rgb[0, 0]) == tuple((np.array(cmap(0.0)[:3]) * 255).astype(np.uint8))
    assert tuple(rgb[0, 1]) == tuple((np.array(cmap(1.0)[:3]) * 255).astype(np.uint8))
    assert tuple(rgb[1, 0]) == (242, 242, 242)


def test_a_wsi_map_lies_over_the_thumbnail_where_the_patches_are():
    coords = np.array([[0, 0], [100, 0]])  # two 100-px patches along x
    thumb = np.full((50, 100, 3), 255, dtype=np.uint8)  # 2 level-0 px per thumbnail px
    out = wsi_panel(coords, np.array([0.0, 1.0]), 0.0, 1.0, thumb, 2.0)
    assert out.shape == thumb.shape
    assert (out[:, :50] != 255).any(axis=2).all() and (out[:, 50:] != 255).any(axis=2).all()
    assert out[0, 10].sum() < out[0, 60].sum()  # low importance darker than high (inferno)
    below = wsi_panel(
        coords, np.array([0.0, 1.0]), 0.0, 1.0, np.full((80, 100, 3), 255, np.uint8), 2.0
    )
    assert (below[60:] == 255).all()  # beneath the patches the slide shows alone


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_gallery_maps_share_a_scale_and_link_full_size_images(fake_run):
    preds = pd.read_csv(fake_run / "predictions.csv", dtype={"patient_id": str})
    gallery = build_gallery(fake_run, preds, ["sparra", "abmil", "mean"])
    assert len(gallery) == 9  # 3 folds x 3 roles
    for patient in gallery:
        assert [m.modality for m in patient.maps] == ["ct", "wsi"]
        for m in patient.maps:
            values = [
                pd.read_csv(
                    fake_run / "importance" / a / f"{patient.patient_id}.{m.modality}.csv"
                ).importance
                for a in ("sparra", "abmil", "mean")
            ]
            assert m.vmin == pytest.approx(min(v.min() for v in values))
            assert m.vmax == pytest.approx(max(v.max() for v in values))
            assert all(_decode(src).width > 0 for src in m.images.values())
            assert (fake_run / Path(m.full)).exists()


def test_named_patients_replace_the_default_choice(fake_run):
    preds = pd.read_csv(fake_run / "predictions.csv", dtype={"patient_id": str})
    gallery = build_gallery(fake_run, preds, ["sparra"], patients=["P004"])
    assert [(p.patient_id, p.role) for p in gallery] == [("P004", "chosen")]


def test_a_wsi_map_is_drawn_over_the_slide_the_cohort_lists(tmp_path, run_factory):
    from radiopath.synthetic_images import write_pyramidal_tiff

    run = run_factory(tmp_path / "run", n=9)
    pink = np.full((3072, 3072, 3), (230, 150, 200), dtype=np.uint8)  # the maps cover 2816 px
    write_pyramidal_tiff(tmp_path / "slides" / "P001.tiff", pink, mpp=0.5)
    pd.DataFrame(
        {
            "patient_id": ["P001", "P002"],
            "time": [1.0, 2.0],
            "event": [1, 0],
            "wsi_image": ["slides/P001.tiff", ""],
        }
    ).to_csv(tmp_path / "cohort.csv", index=False)
    record = json.loads((run / "run.json").read_text())
    record["config"]["cohort"] = str(tmp_path / "cohort.csv")
    (run / "run.json").write_text(json.dumps(record))
    preds = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
    gallery = build_gallery(run, preds, ["sparra", "mean"], patients=["P001", "P002"])
    wsi = {p.patient_id: next(m for m in p.maps if m.modality == "wsi") for p in gallery}
    assert wsi["P001"].over_slide and not wsi["P002"].over_slide
    image = _decode(wsi["P001"].images["sparra"])
    assert image.format == "JPEG" and image.width > 0
    corner = np.asarray(image.convert("RGB"))[2, 2].astype(int)  # no patch there: the slide
    assert np.abs(corner - (230, 150, 200)).max() < 12
    assert _decode(wsi["P002"].images["sparra"]).format == "PNG"


def test_an_unreadable_map_is_left_out_and_named(tmp_path, run_factory):
    run = run_factory(tmp_path / "run", n=6)
    bad = run / "importance" / "abmil" / "P001.wsi.csv"
    bad.write_text("x,y,importance\n0,0,nan\n")
    preds = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
    (patient,) = build_gallery(run, preds, ["sparra", "abmil"], patients=["P001"])
    wsi = next(m for m in patient.maps if m.modality == "wsi")
    assert wsi.images["abmil"] is None and wsi.images["sparra"] is not None
    assert any(str(bad) in problem for problem in patient.problems)
