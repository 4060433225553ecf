"""ClinicalPreprocessor: kinds, encodings, statistics fitted on the training rows only, errors."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from radiopath.clinical.preprocess import ClinicalPreprocessor, parse_ordinal
from radiopath.errors import RadiopathInputError


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": [50.0, 60.0, np.nan, 70.0, 80.0, 65.0],
            "sex": ["M", "F", "F", None, "M", "F"],
            "stage": ["I", "II", "IIIA", "IV", "NA", "IIIB"],
            "pT": ["pT1a", "pT1b", "pT2", "pT3a", "TX", "pT4"],
        },
        index=[f"p{i}" for i in range(6)],
    )


@pytest.mark.parametrize(
    "value, code",
    [
        ("I", 1.0),
        ("Stage II", 2.0),
        ("stage IIIb", 3.1),
        ("IVA", 4.0),
        ("pT1a", 1.0),
        ("pT1b", 1.1),
        ("T2", 2.0),
        ("ypT3c", 3.2),
        ("Tis", 0.5),
        ("N0", 0.0),
        ("pN2", 2.0),
        ("M1", 1.0),
        ("G3", 3.0),
        ("Grade 2", 2.0),
        ("grade IV", 4.0),
    ],
)
def test_parse_ordinal_documented_map(value, code):
    assert parse_ordinal(value) == pytest.approx(code)


@pytest.mark.parametrize("value", ["TX", "NX", "Mx", "GX"])
def test_parse_ordinal_not_assessed_is_missing(value):
    assert math.isnan(parse_ordinal(value))


@pytest.mark.parametrize("value", ["M", "F", "clear cell", "V", "T5", "Nis", "3"])
def test_parse_ordinal_refuses_other_text(value):
    assert parse_ordinal(value) is None


def test_kinds_and_feature_names_are_inferred():
    pre = ClinicalPreprocessor().fit(_frame())
    kinds = {name: col.kind for name, col in pre.columns_.items()}
    assert kinds == {"age": "numeric", "sex": "categorical", "stage": "ordinal", "pT": "ordinal"}
    assert pre.feature_names_ == ["age", "stage", "pT", "sex=F", "sex=M"]
    assert pre.columns_["sex"].features == ["sex=F", "sex=M"]
    assert pre.dropped_ == {}


def test_whole_number_stage_column_is_ordinal_and_other_numbers_numeric():
    frame = pd.DataFrame({"stage": [1, 2, 3, 4], "age": [1, 2, 3, 5]}, index=list("abcd"))
    pre = ClinicalPreprocessor().fit(frame)
    assert pre.columns_["stage"].kind == "ordinal"
    assert pre.columns_["age"].kind == "numeric"


def test_encoding_matches_hand_computation():
    frame = _frame()
    x = ClinicalPreprocessor().fit_transform(frame)
    assert x.dtype == np.float32 and x.shape == (6, 5)
    # age: median of the five present values (65) imputed, then min-max over 50..80
    age = np.array([50, 60, 65, 70, 80, 65.0])
    np.testing.assert_allclose(x[:, 0], (age - 50) / 30, rtol=1e-6)
    # stage: I II IIIA IV (NA -> median of 1, 2, 3, 4, 3.1 = 3) IIIB, min-max over 1..4
    stage = np.array([1, 2, 3, 4, 3, 3.1])
    np.testing.assert_allclose(x[:, 1], (stage - 1) / 3, rtol=1e-6)
    # pT: 1, 1.1, 2, 3, TX -> median of 1, 1.1, 2, 3, 4 = 2, 4
    pt = np.array([1, 1.1, 2, 3, 2, 4])
    np.testing.assert_allclose(x[:, 2], (pt - 1) / 3, rtol=1e-6)
    # sex: the missing one imputed with the most frequent level (F)
    np.testing.assert_array_equal(x[:, 3], [0, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(x[:, 4], [1, 0, 0, 0, 1, 0])


def test_standard_scaling():
    frame = _frame()
    x = ClinicalPreprocessor(scaling="standard").fit_transform(frame)
    age = np.array([50, 60, 65, 70, 80, 65.0])
    np.testing.assert_allclose(x[:, 0], (age - age.mean()) / age.std(), rtol=1e-5)
    np.testing.assert_array_equal(x[:, 3], [0, 1, 1, 1, 0, 1])  # one-hot left as 0/1


def _number_steps(pre: ClinicalPreprocessor):
    steps = pre.transformer_.named_transformers_["number"].named_steps
    return steps["simpleimputer"], steps["minmaxscaler"]


def test_statistics_are_fitted_on_training_rows_only():
    frame = _frame()
    train, test = frame.iloc[:4], frame.iloc[4:]
    pre = ClinicalPreprocessor().fit(train)
    imputer, scaler = _number_steps(pre)
    # training ages 50, 60, (missing), 70: median 60, range 50..70
    assert imputer.statistics_[0] == pytest.approx(60.0)
    np.testing.assert_allclose([scaler.data_min_[0], scaler.data_max_[0]], [50.0, 70.0])
    x_train = pre.transform(train)
    fitted = (imputer.statistics_.copy(), scaler.data_min_.copy(), scaler.data_max_.copy())
    # the test rows are encoded with the training rows' numbers: age 80 -> (80-50)/(70-50)
    assert pre.transform(test)[0, 0] == pytest.approx(1.5)

    wild = test.assign(age=[1000.0, -500.0], stage=["IV", "I"], sex=["X", "Y"])
    x_wild = pre.transform(wild)
    np.testing.assert_array_equal(imputer.statistics_, fitted[0])
    np.testing.assert_array_equal(scaler.data_min_, fitted[1])
    np.testing.assert_array_equal(scaler.data_max_, fitted[2])
    np.testing.assert_array_equal(pre.transform(train), x_train)
    # a fit on the perturbed cohort's training rows is the same fit
    again = ClinicalPreprocessor().fit(pd.concat([train, wild]).loc[train.index])
    np.testing.assert_array_equal(again.transform(train), x_train)
    # the whole cohort would give other statistics, so the checks above have teeth
    _, whole = _number_steps(ClinicalPreprocessor().fit(frame))
    assert whole.data_max_[0] == pytest.approx(80.0)
    # unknown levels at transform are all zeros, not an error
    sex = [pre.feature_names_.index(f) for f in ("sex=F", "sex=M")]
    np.testing.assert_array_equal(x_wild[:, sex], 0.0)


def test_transform_keeps_row_order_and_ignores_extra_columns():
    frame = _frame()
    pre = ClinicalPreprocessor().fit(frame)
    shuffled = frame.iloc[::-1].assign(extra=1)
    np.testing.assert_array_equal(pre.transform(shuffled), pre.transform(frame)[::-1])


def test_all_missing_and_constant_columns_are_dropped_with_a_warning(caplog):
    frame = _frame().assign(empty=[None, "NA", "", np.nan, "unknown", None], site="A")
    with caplog.at_level(logging.WARNING, logger="radiopath.clinical.preprocess"):
        pre = ClinicalPreprocessor().fit(frame)
    assert pre.dropped_ == {"empty": "all missing", "site": "constant"}
    assert "'empty'" in caplog.text and "'site'" in caplog.text
    assert not any(f.startswith(("empty", "site")) for f in pre.feature_names_)


def test_column_constant_in_the_training_rows_only_is_dropped():
    frame = pd.DataFrame({"age": [1.0, 1.0, 3.0], "x": [1.0, 2.0, 3.0]}, index=list("abc"))
    pre = ClinicalPreprocessor().fit(frame.iloc[:2])
    assert pre.dropped_ == {"age": "constant"}
    assert pre.transform(frame).shape == (3, 1)


def test_numeric_column_with_a_typo_names_column_and_patient():
    frame = pd.DataFrame(
        {"age": ["50", "61", "7O", "55", "49", "62"]}, index=[f"p{i}" for i in range(6)]
    )
    with pytest.raises(RadiopathInputError) as err:
        ClinicalPreprocessor().fit(frame)
    assert err.value.field == "age" and err.value.patient_id == "p2"
    assert "'7O'" in str(err.value)


def test_numeric_typo_at_transform_names_the_patient():
    pre = ClinicalPreprocessor().fit(_frame())
    bad = _frame().iloc[:2].assign(age=["51", "sixty"])
    with pytest.raises(RadiopathInputError) as err:
        pre.transform(bad)
    assert err.value.field == "age" and err.value.patient_id == "p1"


def test_mostly_text_column_is_categorical():
    frame = pd.DataFrame({"site": ["1", "kidney", "lung", "lung"]}, index=list("abcd"))
    pre = ClinicalPreprocessor().fit(frame)
    assert pre.columns_["site"].kind == "categorical"


def test_no_usable_column_is_an_error():
    frame = pd.DataFrame({"site": ["A", "A"], "empty": [None, None]}, index=["a", "b"])
    with pytest.raises(RadiopathInputError) as err:
        ClinicalPreprocessor().fit(frame)
    assert err.value.field == "clinical"


def test_kinds_and_ordinal_maps_override():
    frame = pd.DataFrame(
        {"code": [1, 2, 3, 2], "risk": ["low", "high", "mid", "low"]}, index=list("abcd")
    )
    pre = ClinicalPreprocessor(
        kinds={"code": "categorical"}, ordinal_maps={"risk": {"low": 0, "mid": 1, "high": 2}}
    ).fit(frame)
    assert pre.columns_["code"].kind == "categorical"
    assert pre.columns_["risk"].kind == "ordinal"
    x = pre.transform(frame)
    np.testing.assert_allclose(x[:, pre.feature_names_.index("risk")], [0, 1, 0.5, 0])
    with pytest.raises(RadiopathInputError) as err:
        pre.transform(frame.assign(risk=["low", "extreme", "mid", "low"]))
    assert err.value.field == "risk" and err.value.patient_id == "b"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"scaling": "robust"}, "scaling"),
        ({"kinds": {"age": "text"}}, "age"),
        ({"kinds": {"weight": "numeric"}}, "weight"),
    ],
)
def test_bad_settings_are_named(kwargs, field):
    with pytest.raises(RadiopathInputError) as err:
        ClinicalPreprocessor(**kwargs).fit(_frame())
    assert err.value.field == field


def test_missing_column_at_transform_is_named():
    pre = ClinicalPreprocessor().fit(_frame())
    with pytest.raises(RadiopathInputError) as err:
        pre.transform(_frame().drop(columns="stage"))
    assert err.value.field == "stage"


def test_synthetic_cohort_frame(small_cohort):
    from radiopath.io import read_cohort

    frame = read_cohort(small_cohort).clinical_frame()
    ids = list(frame.index)
    pre = ClinicalPreprocessor()
    x_train = pre.fit_transform(frame.loc[ids[:15]])
    x_test = pre.transform(frame.loc[ids[15:]])
    assert {c.kind for c in pre.columns_.values()} == {"numeric", "categorical", "ordinal"}
    assert x_train.shape[1] == x_test.shape[1] == len(pre.feature_names_)
    assert x_train.min() >= 0 and x_train.max() <= 1
