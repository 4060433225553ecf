"""Clinical baselines: per-column C-index, the Leibovich score and the clinical Cox model,
checked against lifelines, scikit-survival and hand computations.

(Named ``test_clinical_baselines.py``: ``tests/training/test_baselines.py`` exists and the
test folders are not packages, so two files of one name would collide.)"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from scipy.stats import chi2

from radiopath.clinical.baselines import (
    clinical_cox,
    column_c_index,
    concordance_summary,
    leibovich_columns,
    leibovich_score,
    zscore_by_fold,
)
from radiopath.errors import RadiopathInputError


def _cohort(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    hazard = rng.normal(size=n)
    time = rng.exponential(np.exp(-hazard)) * 100 + rng.uniform(0, 1e-3, n)
    censor = rng.exponential(150, n)
    event = time <= censor
    time = np.minimum(time, censor)
    stage = np.clip(np.round(2.5 + hazard + rng.normal(0, 1, n)), 1, 4).astype(int)
    frame = pd.DataFrame(
        {
            "age": rng.normal(60, 10, n).round(1),
            "stage": [["I", "II", "III", "IV"][s - 1] for s in stage],
            "sex": rng.choice(["F", "M"], n),
            "site": rng.choice(["a", "b", "c"], n),
            "protective": -hazard + rng.normal(0, 0.5, n),
        },
        index=[f"p{i:03d}" for i in range(n)],
    )
    return frame, time, event, hazard


def test_column_c_index_equals_lifelines_and_sksurv():
    frame, time, event, _ = _cohort()
    table = column_c_index(frame, time, event, n_draws=2000, seed=1).set_index("column")
    for column, score in (
        ("age", frame["age"].to_numpy()),
        ("stage", frame["stage"].map({"I": 1, "II": 2, "III": 3, "IV": 4}).to_numpy()),
        ("sex", (frame["sex"] == "M").to_numpy(float)),
        ("protective", frame["protective"].to_numpy()),
    ):
        expected = concordance_index(time, -score, event)  # lifelines: higher = longer survival
        assert table.loc[column, "c_index"] == pytest.approx(expected, abs=1e-12)
    # a stage ties often: random tie-breaking moves it, its mean is Harrell's C with ties 1/2
    stage = table.loc["stage"]
    assert stage.tied_share > 0.2 and stage.c_index_random_ties_sd > 0.003
    assert stage.c_index_random_ties == pytest.approx(stage.c_index, abs=0.002)
    assert table.loc["sex", "score"] == "sex == M"
    assert table.loc["protective", "c_index"] < 0.5
    assert "longer survival" in table.loc["protective", "note"]
    assert np.isnan(table.loc["site", "c_index"]) and "3 levels" in table.loc["site", "note"]


def test_untied_score_has_no_tie_spread():
    rng = np.random.default_rng(0)
    time, event, score = rng.uniform(1, 10, 50), rng.uniform(size=50) < 0.6, rng.normal(size=50)
    out = concordance_summary(score, time, event, n_draws=50)
    assert out["tied_share"] == 0
    assert out["c_index_random_ties_sd"] == pytest.approx(0.0, abs=1e-12)
    assert out["c_index_random_ties"] == pytest.approx(out["c_index"], abs=1e-12)


def test_missing_values_are_left_out_of_a_column():
    frame, time, event, _ = _cohort(60)
    frame.loc[frame.index[:10], "age"] = np.nan
    row = column_c_index(frame, time, event, n_draws=10).set_index("column").loc["age"]
    expected = concordance_index(time[10:], -frame["age"].to_numpy()[10:], event[10:])
    assert row.n == 50 and row.c_index == pytest.approx(expected, abs=1e-12)


def test_column_c_index_checks_lengths():
    frame, time, event, _ = _cohort(30)
    with pytest.raises(RadiopathInputError) as err:
        column_c_index(frame, time[:-1], event)
    assert err.value.field == "time"


# --------------------------------------------------------------------------- Leibovich


def _leibovich_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "pT": ["pT1a", "pT1b", "pT2", "pT3a", "T1", "pT4", "pT2", "T1"],
            "pN": ["pN0", "pNX", "pN1", "N0", "N0", "pN2", "pN0", "N0"],
            "tumor_size": [3.5, 5.0, 10.0, 12.0, 6.0, 15.0, 8.0, 3.0],
            "grade": [2, 3, 4, 2, 1, "Grade III", None, 2],
            "necrosis": ["no", "yes", "yes", "no", "absent", 1, "no", "no"],
        },
        index=[f"p{i}" for i in range(8)],
    )


def test_leibovich_score_by_hand():
    score = leibovich_score(_leibovich_frame())
    # pT 0/2/3/4, pN 0/2, size >= 10 cm 1, grade 1-2 0 / 3 1 / 4 3, necrosis 1
    expected = [
        0 + 0 + 0 + 0 + 0,  # pT1a, pN0, 3.5 cm, grade 2, no necrosis
        2 + 0 + 0 + 1 + 1,  # pT1b, pNX counts as pN0, grade 3, necrosis
        3 + 2 + 1 + 3 + 1,  # pT2, pN1, 10 cm, grade 4, necrosis
        4 + 0 + 1 + 0 + 0,  # pT3a, 12 cm
        2 + 0 + 0 + 0 + 0,  # T1 without sub-category at 6 cm: T1b
        4 + 2 + 1 + 1 + 1,  # pT4, pN2, 15 cm, grade III, necrosis 1
        np.nan,  # grade missing
        0 + 0 + 0 + 0 + 0,  # T1 at 3 cm: T1a
    ]
    np.testing.assert_array_equal(score.to_numpy(), expected)
    assert list(score.index) == list(_leibovich_frame().index)


def test_leibovich_size_in_millimetres():
    frame = _leibovich_frame().assign(tumor_size=lambda f: f.tumor_size * 10)
    np.testing.assert_array_equal(
        leibovich_score(frame, size_unit="mm").to_numpy(),
        leibovich_score(_leibovich_frame()).to_numpy(),
    )


def test_leibovich_absent_inputs_are_named(caplog):
    frame = _leibovich_frame().drop(columns=["necrosis", "pN"])
    with caplog.at_level(logging.WARNING, logger="radiopath.clinical.baselines"):
        assert leibovich_score(frame) is None
    assert "n_stage, necrosis" in caplog.text
    assert leibovich_columns(frame)["necrosis"] is None


def test_leibovich_mapping_names_other_columns():
    frame = _leibovich_frame().rename(columns={"necrosis": "nec", "pT": "T_path"})
    score = leibovich_score(frame, {"necrosis": "nec", "t_stage": "T_path"})
    np.testing.assert_array_equal(score.to_numpy(), leibovich_score(_leibovich_frame()).to_numpy())
    with pytest.raises(RadiopathInputError) as err:
        leibovich_score(frame, {"necrosis": "necrosis_flag"})
    assert err.value.field == "necrosis_flag"
    with pytest.raises(RadiopathInputError) as err:
        leibovich_score(frame, {"size_mm": "tumor_size"})
    assert err.value.field == "leibovich"


def test_leibovich_bad_value_names_patient_and_column():
    frame = _leibovich_frame()
    frame.loc["p3", "necrosis"] = "maybe"
    with pytest.raises(RadiopathInputError) as err:
        leibovich_score(frame)
    assert err.value.patient_id == "p3" and err.value.field == "necrosis"


# ------------------------------------------------------------------- multivariable Cox


def test_zscore_by_fold():
    risks = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "a", "b", "c", "d"],
            "fold": [0, 0, 1, 1, 2, 3, 2, 3],
            "risk": [1.0, 3.0, 10.0, 30.0, 5.0, 4.0, 7.0, 9.0],
        }
    )
    z = zscore_by_fold(risks)
    s = np.std([1.0, 3.0], ddof=1)
    # a: z-scored in fold 0 and in fold 2, then the two averaged
    assert z["a"] == pytest.approx(np.mean([(1 - 2) / s, (5 - 6) / np.std([5, 7.0], ddof=1)]))
    assert z.sum() == pytest.approx(0.0, abs=1e-12)


def _cox_inputs(n: int = 150):
    frame, time, event, hazard = _cohort(n, seed=2)
    frame = frame.drop(columns="protective")
    rng = np.random.default_rng(5)
    fold = np.arange(n) % 5
    informative = pd.DataFrame(
        {"patient_id": frame.index, "fold": fold, "risk": hazard * 3 + fold * 10}
    )
    noise = pd.DataFrame({"patient_id": frame.index, "fold": fold, "risk": rng.normal(size=n)})
    return frame, time, event, {"image": informative, "noise": noise}


def test_clinical_cox_matches_lifelines_and_lr_test():
    frame, time, event, risks = _cox_inputs()
    table = clinical_cox(frame, risks, time, event, penalizer=0.0)
    # the same design by hand: standardised numbers and ordinal stage, one-hot minus the
    # first level, the risk z-scored per fold
    design = pd.DataFrame(index=frame.index)
    design["age"] = (frame.age - frame.age.mean()) / frame.age.std(ddof=0)
    stage = frame.stage.map({"I": 1, "II": 2, "III": 3, "IV": 4}).astype(float)
    design["stage"] = (stage - stage.mean()) / stage.std(ddof=0)
    design["sex=M"] = (frame.sex == "M").astype(float)
    design["site=b"] = (frame.site == "b").astype(float)
    design["site=c"] = (frame.site == "c").astype(float)
    risk = risks["image"].set_index("patient_id").risk
    fold = risks["image"].set_index("patient_id").fold
    z = (risk - risk.groupby(fold).transform("mean")) / risk.groupby(fold).transform("std")
    data = design.assign(T=time, E=event.astype(int))
    reduced = CoxPHFitter().fit(data, "T", "E")
    full = CoxPHFitter().fit(data.assign(risk=z), "T", "E")

    rows = table[(table.aggregator == "image") & (table.model == "clinical+risk")].set_index("term")
    for term in ["age", "stage", "sex=M", "site=b", "site=c", "risk"]:
        assert rows.loc[term, "hazard_ratio"] == pytest.approx(full.hazard_ratios_[term], rel=1e-5)
        assert rows.loc[term, "p"] == pytest.approx(full.summary.loc[term, "p"], rel=1e-4)
    lr = 2 * (full.log_likelihood_ - reduced.log_likelihood_)
    assert rows.lr_chi2.iloc[0] == pytest.approx(lr, rel=1e-5)
    assert rows.lr_p.iloc[0] == pytest.approx(chi2.sf(lr, 1), rel=1e-4)
    clinical = table[(table.aggregator == "image") & (table.model == "clinical")]
    assert "risk" not in set(clinical.term)
    # the planted risk adds to the clinical factors, noise does not
    noise = table[table.aggregator == "noise"]
    assert rows.lr_p.iloc[0] < 1e-6 and noise.lr_p.iloc[0] > 0.01


def test_clinical_cox_penalised_default_is_close():
    frame, time, event, risks = _cox_inputs()
    plain = clinical_cox(frame, risks, time, event, penalizer=0.0)
    default = clinical_cox(frame, risks, time, event)
    np.testing.assert_allclose(default.hazard_ratio, plain.hazard_ratio, rtol=0.1)


def test_clinical_cox_names_a_patient_without_clinical_row():
    frame, time, event, risks = _cox_inputs()
    bad = risks["image"].copy()
    bad.loc[0, "patient_id"] = "ghost"
    with pytest.raises(RadiopathInputError) as err:
        clinical_cox(frame, {"image": bad}, time, event)
    assert err.value.patient_id == "ghost" and err.value.field == "risk:image"
