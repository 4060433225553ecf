"""The cohort table (radiopath/io.py): round trips and every kind of bad input, with messages
that name the file, patient and field."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import pytest
from bag_helpers import make_bag

from radiopath.errors import RadiopathInputError
from radiopath.io import (
    Patient,
    load_patient_bags,
    read_cohort,
    write_cohort,
    write_embeddings,
)


def write_table(tmp_path, rows, name="cohort.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def bag_files(tmp_path):
    (tmp_path / "e").mkdir()
    for i in range(3):
        write_embeddings(tmp_path / "e" / f"p{i}.wsi.h5", make_bag("wsi", seed=i))
        write_embeddings(tmp_path / "e" / f"p{i}.ct.h5", make_bag("ct", seed=i))
    return tmp_path


def good_rows():
    return [
        {
            "patient_id": f"p{i}",
            "time": 10.0 + i,
            "event": i % 2,
            "wsi": f"e/p{i}.wsi.h5",
            "ct": f"e/p{i}.ct.h5",
            "age": 50 + i,
        }
        for i in range(3)
    ]


def test_cohort_round_trip(bag_files):
    cohort = read_cohort(write_table(bag_files, good_rows()))
    assert cohort.patient_ids == ["p0", "p1", "p2"]
    assert cohort.modalities == ["wsi", "ct"]
    assert cohort.clinical_columns == ["age"]
    assert cohort.problems == []
    out = write_cohort(bag_files / "sub" / "again.csv", cohort.patients, cohort.clinical_columns)
    again = read_cohort(out)
    assert again.patient_ids == cohort.patient_ids
    np.testing.assert_array_equal(again.times, cohort.times)
    np.testing.assert_array_equal(again.events, cohort.events)
    for a, b in zip(again.patients, cohort.patients):
        for m in ("wsi", "ct"):
            assert [f.resolve() for f in a.files[m]] == [f.resolve() for f in b.files[m]]
    bags = load_patient_bags(again["p1"], "ct")
    np.testing.assert_array_equal(bags[0].features, make_bag("ct", seed=1).features)


@pytest.mark.parametrize(
    "change, field, message",
    [
        (lambda r: r[1].update(patient_id="p0"), "patient_id", "duplicate patient ids"),
        (lambda r: r[1].update(time=0), "time", "must be a number > 0"),
        (lambda r: r[1].update(time=-3), "time", "must be a number > 0"),
        (lambda r: r[1].update(time=None), "time", "must be a number > 0"),
        (lambda r: r[1].update(event=2), "event", "must be 0 .censored. or 1"),
        (lambda r: [x.update(event=0) for x in r], "event", "no patient has an event"),
    ],
)
def test_bad_cohort_tables(bag_files, change, field, message):
    rows = good_rows()
    change(rows)
    path = write_table(bag_files, rows)
    with pytest.raises(RadiopathInputError, match=message) as info:
        read_cohort(path)
    assert f"field '{field}'" in str(info.value)
    assert str(path) in str(info.value)
    if field in ("time", "event") and "no patient" not in message:
        assert "patient 'p1'" in str(info.value)


def test_missing_required_column(bag_files):
    rows = [{k: v for k, v in r.items() if k != "event"} for r in good_rows()]
    with pytest.raises(RadiopathInputError, match="field 'event'.*required column"):
        read_cohort(write_table(bag_files, rows))


def test_missing_file_is_skipped_or_strict(bag_files):
    rows = good_rows()
    rows[2]["wsi"] = "e/missing.wsi.h5"
    path = write_table(bag_files, rows)
    cohort = read_cohort(path)
    assert len(cohort) == 3  # p2 keeps its CT
    assert cohort["p2"].modalities == ["ct"]
    assert len(cohort.problems) == 1
    text = str(cohort.problems[0])
    assert "missing.wsi.h5" in text and "patient 'p2'" in text and "field 'wsi'" in text
    with pytest.raises(RadiopathInputError, match="patient 'p2'.*does not exist"):
        read_cohort(path, strict=True)


def test_patient_without_any_modality_is_reported(bag_files):
    rows = [{k: v for k, v in r.items() if k != "age"} for r in good_rows()]
    rows[0]["wsi"] = ""
    rows[0]["ct"] = ""
    path = write_table(bag_files, rows)
    cohort = read_cohort(path)
    assert cohort.patient_ids == ["p1", "p2"]
    assert "patient 'p0'" in str(cohort.problems[0]) and "no usable modality" in str(
        cohort.problems[0]
    )
    with pytest.raises(RadiopathInputError, match="patient 'p0'.*no usable modality"):
        read_cohort(path, strict=True)


def test_width_mismatch_within_a_modality(bag_files):
    write_embeddings(bag_files / "e" / "wide.wsi.h5", make_bag("wsi", d=7))
    rows = good_rows()
    rows[1]["wsi"] = "e/p1.wsi.h5;e/wide.wsi.h5"
    cohort = read_cohort(write_table(bag_files, rows))
    assert len(cohort["p1"].files["wsi"]) == 1
    assert "width 7 differs from 4" in str(cohort.problems[0])
    with pytest.raises(RadiopathInputError, match="wide.wsi.h5.*patient 'p1'.*width 7 differs"):
        read_cohort(write_table(bag_files, rows), strict=True)


def test_unreadable_file_in_cohort(bag_files):
    (bag_files / "e" / "broken.h5").write_bytes(b"\x00" * 64)
    rows = good_rows()
    rows[0]["ct"] = "e/broken.h5"
    cohort = read_cohort(write_table(bag_files, rows))
    assert cohort["p0"].modalities == ["wsi"]
    assert "broken.h5" in str(cohort.problems[0])


def test_require_modalities(bag_files):
    rows = good_rows()
    for r in rows:
        r["ct"] = ""
    cohort = read_cohort(write_table(bag_files, rows))
    cohort.require_modalities(["wsi", "clinical"])
    with pytest.raises(
        RadiopathInputError, match="modality 'ct' was asked for but no patient has it"
    ):
        cohort.require_modalities(["ct"])
    with pytest.raises(RadiopathInputError, match="unknown modality 'pet'"):
        cohort.require_modalities(["pet"])


def test_loading_never_writes_to_inputs(bag_files):
    path = write_table(bag_files, good_rows())
    files = sorted((bag_files / "e").glob("*.h5")) + [path]

    def fingerprint():
        return {
            f: (hashlib.sha256(f.read_bytes()).hexdigest(), os.stat(f).st_mtime_ns) for f in files
        }

    before = fingerprint()
    cohort = read_cohort(path)
    for p in cohort.patients:
        for m in p.modalities:
            load_patient_bags(p, m)
    assert fingerprint() == before
    assert sorted(os.listdir(bag_files / "e")) == sorted(f.name for f in files[:-1])


def test_patient_error_names_patient(bag_files):
    patient = Patient("pX", 1.0, 1, {"wsi": [bag_files / "e" / "gone.h5"]})
    with pytest.raises(RadiopathInputError, match="gone.h5.*patient 'pX'"):
        load_patient_bags(patient, "wsi")
