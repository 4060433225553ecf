"""``extract_cohort`` and ``radiopath extract``: a cohort of images -> embeddings + a new table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from radiopath.cli import main
from radiopath.errors import RadiopathInputError
from radiopath.extract import extract_cohort, read_image_cohort
from radiopath.io import read_cohort, read_embeddings
from radiopath.synthetic_images import IMAGE_MODE_EXTRACT


def test_extracted_cohort_follows_the_contract(image_cohort, extracted_cohort):
    images = pd.read_csv(image_cohort, dtype={"patient_id": str})
    table = pd.read_csv(extracted_cohort, dtype={"patient_id": str})
    assert list(table.columns[:5]) == ["patient_id", "time", "event", "wsi", "ct"]
    assert {"wsi_image", "ct_image", "ct_mask", "age", "sex", "stage"} <= set(table.columns)
    pd.testing.assert_frame_equal(
        table[["patient_id", "time", "event", "age", "sex", "stage"]],
        images[["patient_id", "time", "event", "age", "sex", "stage"]],
    )
    cohort = read_cohort(extracted_cohort, strict=True)
    assert len(cohort) == len(images) and cohort.modalities == ["wsi", "ct"]
    root = extracted_cohort.parent
    for p in cohort.patients:
        wsi = read_embeddings(p.files["wsi"][0], modality="wsi")
        ct = read_embeddings(p.files["ct"][0], modality="ct")
        assert wsi.mpp == pytest.approx(1.0) and wsi.patch_size == 64
        assert ct.spacing == pytest.approx(IMAGE_MODE_EXTRACT["ct_spacing"]) and ct.patch_size == 4
        assert wsi.encoder == ct.encoder == "handcrafted"
        assert ct.extra_attrs["tumour_mask"]  # every synthetic patient has a mask here
    # Image columns are rewritten relative to the new table and still point at the images.
    for rel in table["wsi_image"]:
        assert (root / rel).resolve().is_file()
    report = pd.read_csv(root / "extract_report.csv")
    assert (report["status"] == "ok").all() and len(report) == 2 * len(images)
    run = json.loads((root / "run.json").read_text())
    assert run["command"] == "extract" and run["status"] == "finished"
    assert run["config"]["encoders"]["wsi"]["name"] == "handcrafted"


def test_rerun_resumes_and_a_new_config_recomputes(image_cohort, extracted_cohort, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(extracted_cohort.parent, out)
    files = sorted((out / "embeddings").glob("*.h5"))
    before = {f: f.stat().st_mtime_ns for f in files}
    extract_cohort(image_cohort, out, progress=False, **IMAGE_MODE_EXTRACT)
    report = pd.read_csv(out / "extract_report.csv")
    assert (report["status"] == "resumed").all()
    assert {f: f.stat().st_mtime_ns for f in files} == before
    # A different CT patch size changes the CT fingerprint only.
    extract_cohort(image_cohort, out, progress=False, **{**IMAGE_MODE_EXTRACT, "ct_patch_size": 6})
    report = pd.read_csv(out / "extract_report.csv")
    assert set(report.loc[report.modality == "wsi", "status"]) == {"resumed"}
    assert set(report.loc[report.modality == "ct", "status"]) == {"ok"}
    assert read_embeddings(next((out / "embeddings").glob("*.ct.h5"))).patch_size == 6


def broken_cohort(image_cohort, tmp_path):
    """The image cohort with one corrupt slide, one missing CT and one truncated CT."""
    table = pd.read_csv(image_cohort, dtype={"patient_id": str})
    root = image_cohort.parent
    work = tmp_path / "broken"
    shutil.copytree(root / "images", work / "images")
    (work / "images" / f"{table.patient_id[0]}.wsi.tiff").write_bytes(b"II*\x00 broken" * 64)
    (work / "images" / f"{table.patient_id[1]}.ct.nii.gz").unlink()
    ct2 = work / "images" / f"{table.patient_id[2]}.ct.nii.gz"
    ct2.write_bytes(ct2.read_bytes()[:300])
    csv = work / "cohort.csv"
    table.to_csv(csv, index=False)
    return csv, table


def test_bad_files_are_reported_and_skipped(image_cohort, tmp_path, caplog):
    csv, table = broken_cohort(image_cohort, tmp_path)
    ids = table.patient_id.tolist()
    with caplog.at_level("WARNING"):
        new = extract_cohort(csv, tmp_path / "out", progress=False, **IMAGE_MODE_EXTRACT)
    report = pd.read_csv(tmp_path / "out" / "extract_report.csv", dtype={"patient_id": str})
    failed = report[report.status == "failed"]
    assert sorted(zip(failed.patient_id, failed.modality)) == sorted(
        [(ids[0], "wsi"), (ids[1], "ct"), (ids[2], "ct")]
    )
    msg = dict(zip(zip(failed.patient_id, failed.modality), failed.message))
    assert f"{ids[0]}.wsi.tiff" in msg[(ids[0], "wsi")] and "wsi_image" in msg[(ids[0], "wsi")]
    assert "does not exist" in msg[(ids[1], "ct")] and f"{ids[1]}.ct.nii.gz" in msg[(ids[1], "ct")]
    assert f"{ids[2]}.ct.nii.gz" in msg[(ids[2], "ct")]
    assert (report.status == "ok").sum() == 2 * len(ids) - 3
    logged = caplog.text
    assert ids[0] in logged and ids[1] in logged and "skipped" in logged
    cohort = read_cohort(new, strict=True)  # the table only lists the files that were written
    assert len(cohort) == len(ids)
    assert cohort[ids[0]].modalities == ["ct"] and cohort[ids[1]].modalities == ["wsi"]
    assert cohort[ids[3]].modalities == ["wsi", "ct"]


def test_strict_stops_at_the_first_bad_file(image_cohort, tmp_path):
    csv, table = broken_cohort(image_cohort, tmp_path)
    # The missing CT is found before any work starts.
    with pytest.raises(RadiopathInputError, match="does not exist") as err:
        extract_cohort(csv, tmp_path / "out", strict=True, progress=False, **IMAGE_MODE_EXTRACT)
    assert f"patient '{table.patient_id[1]}'" in str(err.value)
    assert not (tmp_path / "out" / "embeddings").exists()
    (csv.parent / "images" / f"{table.patient_id[1]}.ct.nii.gz").write_bytes(b"")
    with pytest.raises(RadiopathInputError) as err:
        extract_cohort(csv, tmp_path / "out", strict=True, progress=False, **IMAGE_MODE_EXTRACT)
    assert f"patient '{table.patient_id[0]}'" in str(err.value) and ".wsi.tiff" in str(err.value)


def write_table(tmp_path, rows, columns=None):
    csv = tmp_path / "table.csv"
    pd.DataFrame(rows, columns=columns).to_csv(csv, index=False)
    return csv


def test_image_table_errors_name_patient_and_column(tmp_path):
    base = {"patient_id": "A", "time": 3.0, "event": 1, "ct_image": "a.nii;b.nii"}
    csv = write_table(tmp_path, [{**base, "ct_mask": "m.nii"}])
    with pytest.raises(RadiopathInputError, match="1 tumour mask.*2 CT image") as err:
        read_image_cohort(csv)
    assert "patient 'A'" in str(err.value) and "field 'ct_mask'" in str(err.value)
    csv = write_table(tmp_path, [{**base, "time": -1}])
    with pytest.raises(RadiopathInputError, match="patient 'A', field 'time'"):
        read_image_cohort(csv)
    csv = write_table(tmp_path, [base, base])
    with pytest.raises(RadiopathInputError, match="duplicate patient ids"):
        read_image_cohort(csv)
    csv = write_table(tmp_path, [{"patient_id": "A", "time": 1, "event": 1, "wsi": "x.h5"}])
    with pytest.raises(RadiopathInputError, match="no image column"):
        read_image_cohort(csv)
    csv = write_table(tmp_path, [{**base, "event": 0}])
    with pytest.raises(RadiopathInputError, match="no patient has an event"):
        read_image_cohort(csv)
    ok = read_image_cohort(write_table(tmp_path, [{**base, "ct_mask": "m1.nii;m2.nii"}]))
    assert [m.name for m in ok.patients[0].masks] == ["m1.nii", "m2.nii"]
    assert ok.patients[0].images["ct"][1] == tmp_path / "b.nii"
    partial = read_image_cohort(write_table(tmp_path, [{**base, "ct_mask": " ;m2.nii"}]))
    assert partial.patients[0].masks == [None, tmp_path / "m2.nii"]


def test_encoder_problems_stop_before_any_work(image_cohort, tmp_path):
    with pytest.raises(RadiopathInputError, match="unknown encoder 'vgg'"):
        extract_cohort(image_cohort, tmp_path / "o", encoder="vgg", progress=False)
    with pytest.raises(RadiopathInputError, match="no checkpoint was given"):
        extract_cohort(image_cohort, tmp_path / "o", encoder="resnet18", progress=False)
    with pytest.raises(RadiopathInputError, match="'uni' does not encode 'ct'"):
        extract_cohort(
            image_cohort,
            tmp_path / "o",
            encoder={"wsi": "handcrafted", "ct": "uni"},
            progress=False,
        )
    assert not (tmp_path / "o").exists()


def subset_csv(image_cohort, tmp_path, n=2):
    """``n`` patients (events first) in a table elsewhere, with absolute image paths."""
    table = pd.read_csv(image_cohort).sort_values("event", ascending=False).iloc[:n].copy()
    for col in ("wsi_image", "ct_image", "ct_mask"):
        table[col] = [str(image_cohort.parent / rel) for rel in table[col]]
    csv = tmp_path / "subset" / "cohort.csv"
    csv.parent.mkdir()
    table.to_csv(csv, index=False)
    return csv


def test_several_images_per_patient(image_cohort, tmp_path):
    csv = subset_csv(image_cohort, tmp_path, n=2)
    table = pd.read_csv(csv)
    table.loc[0, "wsi_image"] = f"{table.wsi_image[0]};{table.wsi_image[1]}"
    table.loc[0, "ct_image"] = f"{table.ct_image[0]};{table.ct_image[1]}"
    table.loc[0, "ct_mask"] = f"{table.ct_mask[0]};{table.ct_mask[1]}"
    table.to_csv(csv, index=False)
    new = extract_cohort(csv, tmp_path / "multi", progress=False, **IMAGE_MODE_EXTRACT)
    cohort = read_cohort(new, strict=True)
    first = cohort.patients[0]
    assert [f.name for f in first.files["wsi"]] == [
        f"{first.patient_id}.wsi.h5",
        f"{first.patient_id}.wsi.1.h5",
    ]
    assert len(first.files["ct"]) == 2 and len(cohort.patients[1].files["ct"]) == 1
    # The second slide of patient 0 is patient 1's slide: the same embeddings.
    second = read_embeddings(first.files["wsi"][1])
    other = read_embeddings(cohort.patients[1].files["wsi"][0])
    np.testing.assert_array_equal(second.features, other.features)


def test_resnet18_random_init_runs_on_a_cohort(image_cohort, tmp_path):
    csv = subset_csv(image_cohort, tmp_path)
    new = extract_cohort(
        csv,
        tmp_path / "r",
        encoder={"wsi": "resnet18", "ct": "handcrafted"},
        random_init=True,
        workers=0,
        progress=False,
        **IMAGE_MODE_EXTRACT,
    )
    cohort = read_cohort(new, strict=True)
    bag = read_embeddings(cohort.patients[0].files["wsi"][0])
    assert bag.dim == 512 and bag.encoder == "resnet18" and np.isfinite(bag.features).all()


def test_cli_extract(image_cohort, tmp_path):
    runner = CliRunner()
    csv = subset_csv(image_cohort, tmp_path)
    args = [
        "extract",
        "--cohort",
        str(csv),
        "--out",
        str(tmp_path / "cli"),
        "--mpp",
        "2",
        "--patch-size",
        "32",
        "--ct-spacing",
        "1.5,1.5,2.5",
        "--ct-patch-size",
        "4",
        "--no-progress",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "4 extracted, 0 resumed, 0 failed" in result.output
    assert (tmp_path / "cli" / "cohort.csv").is_file()
    result = runner.invoke(main, [*args, "--encoder", "wsi=handcrafted,ct=nothing"])
    assert result.exit_code == 2 and "unknown encoder 'nothing'" in result.output
    result = runner.invoke(main, [*args, "--encoder", "resnet18", "--checkpoint", "/no/such.pth"])
    assert result.exit_code == 2 and "/no/such.pth" in result.output
    cfg = tmp_path / "extract.yaml"
    cfg.write_text("ct_patch_size: 5\nbogus: 1\n")
    result = runner.invoke(main, [*args[:-3], "--config", str(cfg)])
    assert result.exit_code == 2 and "bogus" in result.output
