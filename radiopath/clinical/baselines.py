"""Clinical baselines an image risk is measured against.

* :func:`column_c_index` -- each clinical column on its own as a risk score: Harrell's C
  and the C-index with its ties broken at random (discrete scores such as a stage tie
  often; counting a tied pair as 1/2 is one convention among several, Boeke et al. 2025).
* :func:`leibovich_score` -- the Leibovich 2003 score of recurrence after nephrectomy for
  clear-cell renal cell carcinoma, from the cohort's pT, pN, tumour size, nuclear grade and
  necrosis columns.
* :func:`clinical_cox` -- a multivariable Cox model of the clinical columns with and
  without an aggregator's out-of-fold risk, and the likelihood-ratio test between them:
  does the image risk add to the clinical factors?

The C-indices are scikit-survival's; the Cox models are lifelines'.

References
----------
Leibovich BC et al. Prediction of progression after radical nephrectomy for patients with
clear cell renal cell carcinoma. Cancer 97(7):1663-1671, 2003.

Boeke S et al. (2025), on comparing discrete clinical scores with continuous model risks
by the C-index with ties broken at random.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2
from sksurv.metrics import concordance_index_censored

from radiopath.clinical.preprocess import ClinicalPreprocessor, parse_ordinal
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.metrics import c_index_random_tie_draws

log = logging.getLogger(__name__)

__all__ = [
    "COX_PENALIZER",
    "LEIBOVICH_COLUMNS",
    "clinical_cox",
    "column_c_index",
    "concordance_summary",
    "leibovich_columns",
    "leibovich_score",
    "zscore_by_fold",
]

COX_PENALIZER = 0.01
"""Ridge penalty of :func:`clinical_cox` (lifelines' ``penalizer``, on standardised
covariates): small enough to leave the hazard ratios of a well-posed model nearly
unchanged, large enough that a rare level or two collinear columns do not make
Newton-Raphson diverge."""


# --------------------------------------------------------------- one column at a time


def concordance_summary(
    score, time, event, *, n_draws: int = 100, seed: int = 0
) -> dict[str, float]:
    """Harrell's C of one risk score and its C-index with ties broken at random.

    Parameters
    ----------
    score
        ``[n]`` risk, higher = earlier event; patients with a missing score are left out.
    time, event
        ``[n]`` follow-up time and event indicator.
    n_draws, seed
        Random orders of the tied scores (:func:`radiopath.evaluation.metrics.c_index_random_tie_draws`).

    Returns
    -------
    dict
        ``n``, ``n_events``, ``c_index`` (scikit-survival's ``concordance_index_censored``,
        a tied pair counted 1/2), ``c_index_random_ties`` and ``c_index_random_ties_sd``
        (mean and standard deviation over the draws), ``tied_share`` (the share of all
        patient pairs whose scores tie).
    """
    score = np.asarray(score, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event).astype(bool)
    keep = np.isfinite(score)
    score, time, event = score[keep], time[keep], event[keep]
    out = {"n": int(keep.sum()), "n_events": int(event.sum())}
    if out["n_events"] == 0 or np.unique(score).size < 2:
        return {
            **out,
            "c_index": math.nan,
            "c_index_random_ties": math.nan,
            "c_index_random_ties_sd": math.nan,
            "tied_share": math.nan,
        }
    harrell = concordance_index_censored(event, time, score)[0]
    draws = c_index_random_tie_draws(event, time, score, n_draws, seed=seed)
    _, counts = np.unique(score, return_counts=True)
    pairs = score.size * (score.size - 1) / 2
    return {
        **out,
        "c_index": float(harrell),
        "c_index_random_ties": float(draws.mean()),
        "c_index_random_ties_sd": float(draws.std(ddof=1)) if n_draws > 1 else 0.0,
        "tied_share": float((counts * (counts - 1) / 2).sum() / pairs),
    }


def column_c_index(
    frame: pd.DataFrame, time, event, *, n_draws: int = 100, seed: int = 0
) -> pd.DataFrame:
    """Each clinical column as a risk score on its own.

    A numeric or ordinal column is the score as it is: higher value = higher risk (for a
    stage or grade that is the clinical convention; for a numeric column it is a choice,
    so a C-index below 0.5 means that higher values go with *longer* survival, said in the
    ``note``). A two-level categorical column scores 1 for its second level in sorted order
    (named in ``score``). A categorical column with more levels has no order and no
    C-index of its own (the row says so); it enters :func:`clinical_cox` one-hot.
    Patients whose value is missing are left out of that column's C-index (``n``).

    Parameters
    ----------
    frame
        Clinical columns, one row per patient, in the order of ``time`` and ``event``
        (:meth:`radiopath.io.Cohort.clinical_frame`).
    time, event
        ``[n]`` follow-up and event indicator.
    n_draws, seed
        Random orders of the tied scores per column.

    Returns
    -------
    pandas.DataFrame
        ``column, kind, score, n, n_events, c_index, c_index_random_ties,
        c_index_random_ties_sd, tied_share, note``, a row per column.
    """
    time, event = _check_outcome(frame, time, event)
    kinds = ClinicalPreprocessor().fit(frame)  # raises on typos, names the patient
    rows = []
    for name in frame.columns:
        name = str(name)
        spec = kinds.columns_.get(name)
        if spec is None:
            rows.append({"column": name, "kind": "dropped", "note": kinds.dropped_.get(name, "")})
            continue
        values = ClinicalPreprocessor._encode(frame[name], spec)
        score_name, note = name, ""
        if spec.kind == "categorical":
            if len(spec.levels) != 2:
                rows.append(
                    {
                        "column": name,
                        "kind": spec.kind,
                        "note": f"{len(spec.levels)} levels without order: no C-index "
                        "(one-hot in the Cox model)",
                    }
                )
                continue
            level = spec.levels[1]
            score_name = f"{name} == {level}"
            values = (values == level).astype(float).where(values.notna())
        summary = concordance_summary(values.to_numpy(), time, event, n_draws=n_draws, seed=seed)
        if summary["c_index"] < 0.5:
            note = f"C < 0.5: higher {score_name} goes with longer survival"
        rows.append(
            {"column": name, "kind": spec.kind, "score": score_name, **summary, "note": note}
        )
    return pd.DataFrame(rows, columns=_C_COLUMNS)


_C_COLUMNS = [
    "column",
    "kind",
    "score",
    "n",
    "n_events",
    "c_index",
    "c_index_random_ties",
    "c_index_random_ties_sd",
    "tied_share",
    "note",
]


def _check_outcome(frame: pd.DataFrame, time, event) -> tuple[np.ndarray, np.ndarray]:
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event)
    if time.shape != (len(frame),) or event.shape != (len(frame),):
        raise RadiopathInputError(
            f"time and event must have one value per row of the clinical frame "
            f"({len(frame)}), got {time.shape} and {event.shape}",
            field="time",
        )
    return time, event.astype(bool)


# ------------------------------------------------------------------------- Leibovich

LEIBOVICH_COLUMNS: dict[str, tuple[str, ...]] = {
    "t_stage": ("pT", "pt_stage", "t_stage", "pathologic_t", "T"),
    "n_stage": ("pN", "pn_stage", "n_stage", "pathologic_n", "N"),
    "size": ("tumor_size", "tumour_size", "tumor_size_cm", "size_cm", "size"),
    "grade": ("nuclear_grade", "fuhrman_grade", "isup_grade", "grade"),
    "necrosis": ("necrosis", "tumor_necrosis", "tumour_necrosis", "coagulative_necrosis"),
}
"""The score's five inputs and the cohort column names looked for, in order (compared
without case); ``mapping`` in :func:`leibovich_score` names others."""

_YES = {"1", "yes", "y", "true", "present", "positive"}
_NO = {"0", "no", "n", "false", "absent", "negative"}


def leibovich_columns(
    frame: pd.DataFrame, mapping: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """Which column of ``frame`` holds each input of the Leibovich score (None: absent).

    ``mapping`` (input -> column; inputs ``t_stage``, ``n_stage``, ``size``, ``grade``,
    ``necrosis``) wins over the names of :data:`LEIBOVICH_COLUMNS`; a mapped column that
    is not in the frame is an error naming it.
    """
    mapping = dict(mapping or {})
    unknown = set(mapping) - set(LEIBOVICH_COLUMNS)
    if unknown:
        raise RadiopathInputError(
            f"unknown Leibovich input(s) {sorted(unknown)}; the inputs are "
            f"{list(LEIBOVICH_COLUMNS)}",
            field="leibovich",
        )
    lower = {str(c).lower(): str(c) for c in frame.columns}
    found: dict[str, str | None] = {}
    for key, names in LEIBOVICH_COLUMNS.items():
        if key in mapping:
            if mapping[key] not in frame.columns:
                raise RadiopathInputError(
                    f"Leibovich input {key!r} is mapped to a column the cohort does not have "
                    f"(columns: {list(frame.columns)})",
                    field=str(mapping[key]),
                )
            found[key] = str(mapping[key])
        else:
            found[key] = next((lower[n.lower()] for n in names if n.lower() in lower), None)
    return found


def leibovich_score(
    frame: pd.DataFrame, mapping: Mapping[str, str] | None = None, *, size_unit: str = "cm"
) -> pd.Series | None:
    """The Leibovich 2003 score (0-11) of each patient, or None when an input is absent.

    ===============  ============================================  ======
    input            value                                         points
    ===============  ============================================  ======
    pT stage         pT1a / pT1b / pT2 / pT3-pT4                   0 / 2 / 3 / 4
    pN stage         pNX or pN0 / pN1-pN2                          0 / 2
    tumour size      < 10 cm / >= 10 cm                            0 / 1
    nuclear grade    1-2 / 3 / 4                                   0 / 1 / 3
    necrosis         no / yes                                      0 / 1
    ===============  ============================================  ======

    pT is read as ``pT1a``, ``T1b``, ``T2``, ``pT3a``... (or 1-4); a ``T1`` without its
    sub-category is split by size as TNM 2002 does (<= 4 cm T1a, else T1b). Grade is read
    as ``1``-``4``, ``G3``, ``Grade III``; necrosis as yes/no, true/false, 1/0,
    present/absent. Following Boeke et al., the score is used as a continuous risk ("the
    adjusted Leibovich"): its many ties are broken at random when its C-index is computed
    (:func:`concordance_summary`), rather than grouped into the published risk groups.

    Parameters
    ----------
    frame
        Clinical columns, indexed by patient id.
    mapping
        Input -> column (:func:`leibovich_columns`).
    size_unit
        ``"cm"`` or ``"mm"``, the unit of the size column.

    Returns
    -------
    pandas.Series or None
        Float scores indexed like ``frame`` (NaN for a patient with an input missing), or
        None, with a warning naming the absent inputs and the names looked for, when the
        cohort lacks a column for any input.

    Raises
    ------
    RadiopathInputError
        A value that does not read as its input (naming the column and the patient).
    """
    if size_unit not in ("cm", "mm"):
        raise RadiopathInputError(
            f"size_unit must be 'cm' or 'mm', got {size_unit!r}", field="size_unit"
        )
    columns = leibovich_columns(frame, mapping)
    absent = [k for k, c in columns.items() if c is None]
    if absent:
        log.warning(
            "Leibovich score not computed: no column for %s (looked for %s; name them with "
            "mapping={input: column})",
            ", ".join(absent),
            "; ".join(f"{k}: {', '.join(LEIBOVICH_COLUMNS[k])}" for k in absent),
        )
        return None
    size = _read_column(frame, columns["size"], _read_size) / (10.0 if size_unit == "mm" else 1.0)
    t_stage = _read_column(frame, columns["t_stage"], _read_t)
    # a T1 without sub-category (code 1.05): TNM 2002 splits T1 at 4 cm
    t1 = t_stage == 1.05
    t_stage = t_stage.mask(t1 & (size <= 4), 1.0).mask(t1 & (size > 4), 1.1).mask(t1 & size.isna())
    points = (
        t_stage.map(
            lambda t: 0 if t == 1.0 else 2 if t == 1.1 else 3 if t < 3 else 4, na_action="ignore"
        )
        + _read_column(frame, columns["n_stage"], _read_n).map(
            lambda n: 0 if n == 0 else 2, na_action="ignore"
        )
        + (size >= 10).astype(float).where(size.notna())
        + _read_column(frame, columns["grade"], _read_grade).map(
            lambda g: 0 if g <= 2 else 1 if g == 3 else 3, na_action="ignore"
        )
        + _read_column(frame, columns["necrosis"], _read_necrosis)
    )
    return points.astype(float).rename("leibovich")


def _read_column(frame: pd.DataFrame, column: str, read) -> pd.Series:
    """``read`` on every present value of ``column``; NaN for missing; a value that does
    not read raises naming the column and the patient."""
    out = pd.Series(np.nan, index=frame.index, dtype=float)
    for pid, value in frame[column].items():
        if pd.isna(value) or (isinstance(value, str) and not value.strip()):
            continue
        code = read(value)
        if code is None:
            raise RadiopathInputError(
                f"{value!r} does not read as a Leibovich input (see leibovich_score)",
                patient_id=str(pid),
                field=column,
            )
        out[pid] = code
    return out


def _number(value) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _read_size(value) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _read_t(value) -> float | None:
    """1.0 pT1a, 1.1 pT1b, 1.05 pT1 (sub-category to be read from size), 2-4."""
    number = _number(value)
    if number is not None:
        return 1.05 if number == 1 else number if number in (2, 3, 4) else None
    text = str(value).strip()
    code = parse_ordinal(text if text.upper().lstrip("CPYR").startswith("T") else "T" + text)
    if code is not None and math.isnan(code):
        return math.nan  # TX: cannot be assessed, a missing input
    if code is None or code < 1:
        return None
    if code in (1.0, 1.1) and not text.upper().endswith(("A", "B")):
        return 1.05
    return 1.1 if code == 1.1 else 1.0 if code == 1.0 else float(int(code))


def _read_n(value) -> float | None:
    number = _number(value)
    if number is not None:
        return number if number in (0, 1, 2) else None
    text = str(value).strip()
    code = parse_ordinal(text if text.upper().lstrip("CPYR").startswith("N") else "N" + text)
    if code is None:
        return None
    return 0.0 if math.isnan(code) else float(int(code))  # pNX counts as pN0


def _read_grade(value) -> float | None:
    number = _number(value)
    if number is not None:
        return number if number in (1, 2, 3, 4) else None
    code = parse_ordinal(str(value))
    return None if code is None or math.isnan(code) or code not in (1, 2, 3, 4) else code


def _read_necrosis(value) -> float | None:
    text = str(value).strip().lower()
    if text.endswith(".0"):
        text = text[:-2]
    return 1.0 if text in _YES else 0.0 if text in _NO else None


# ----------------------------------------------------------------- multivariable Cox


def zscore_by_fold(risks: pd.DataFrame) -> pd.Series:
    """Out-of-fold risks on one scale: z-scored within each test fold, then averaged per
    patient (over repeats, or over the rows of several models).

    Parameters
    ----------
    risks
        ``patient_id, fold, risk`` (e.g. an aggregator's ``risks.csv``).

    Returns
    -------
    pandas.Series
        The pooled risk, indexed by patient id.
    """
    missing = {"patient_id", "fold", "risk"} - set(risks.columns)
    if missing:
        raise RadiopathInputError(f"risk table lacks columns {sorted(missing)}", field="risk")
    grouped = risks.groupby("fold")["risk"]
    sd = grouped.transform("std").replace(0.0, np.nan)
    z = (risks["risk"] - grouped.transform("mean")) / sd
    return z.fillna(0.0).groupby(risks["patient_id"].astype(str)).mean().rename("risk")


@dataclass
class _CoxFit:
    terms: pd.DataFrame
    log_likelihood: float


def _fit_cox(design: pd.DataFrame, time, event, penalizer: float) -> _CoxFit:
    from lifelines import CoxPHFitter

    data = design.assign(_time=time, _event=event.astype(int))
    cph = CoxPHFitter(penalizer=penalizer)
    cph.fit(data, duration_col="_time", event_col="_event")
    s = cph.summary
    terms = pd.DataFrame(
        {
            "term": s.index.astype(str),
            "coef": s["coef"].to_numpy(),
            "hazard_ratio": s["exp(coef)"].to_numpy(),
            "hr_ci_low": s["exp(coef) lower 95%"].to_numpy(),
            "hr_ci_high": s["exp(coef) upper 95%"].to_numpy(),
            "p": s["p"].to_numpy(),
        }
    )
    # the unpenalised partial log-likelihood at the fitted coefficients (lifelines' score
    # is its per-patient mean), so the likelihood-ratio test is not shifted by the penalty
    return _CoxFit(terms, float(cph.score(data, scoring_method="log_likelihood") * len(data)))


def clinical_cox(
    frame: pd.DataFrame,
    risk_by_aggregator: Mapping[str, pd.DataFrame | pd.Series],
    time,
    event,
    *,
    penalizer: float = COX_PENALIZER,
) -> pd.DataFrame:
    """Does an image risk add to the clinical factors? A Cox model with and without it.

    The clinical columns are encoded by :class:`ClinicalPreprocessor` fitted on the whole
    cohort with ``scaling="standard"`` (a numeric or ordinal hazard ratio is per standard
    deviation; missing values imputed by the median or most frequent level), and a
    categorical column's first level (sorted) is its reference (dropped). Each
    aggregator's out-of-fold risk is z-scored within each fold and pooled
    (:func:`zscore_by_fold`), so its hazard ratio is per standard deviation of the risk
    within a fold. Both models are lifelines ``CoxPHFitter(penalizer=penalizer)`` fits on
    the patients that have a risk; the likelihood-ratio statistic ``2 (l_full -
    l_clinical)`` uses the unpenalised partial log-likelihoods at the fitted coefficients
    and is referred to chi-square with one degree of freedom.

    Parameters
    ----------
    frame
        Clinical columns, indexed by patient id, rows in the order of ``time``/``event``.
    risk_by_aggregator
        Aggregator -> its out-of-fold risks: a frame ``patient_id, fold, risk`` (z-scored
        here) or a Series indexed by patient id (used as it is).
    time, event
        ``[n]`` follow-up and event indicator of ``frame``'s patients.
    penalizer
        lifelines' ridge penalty (:data:`COX_PENALIZER`).

    Returns
    -------
    pandas.DataFrame
        ``aggregator, model, term, coef, hazard_ratio, hr_ci_low, hr_ci_high, p, n,
        n_events, lr_chi2, lr_df, lr_p``: for each aggregator the clinical-only model
        (``model = "clinical"``) and the model with the risk (``"clinical+risk"``, term
        ``risk``), the likelihood-ratio test on every row of the aggregator.
    """
    time, event = _check_outcome(frame, time, event)
    design = _clinical_design(frame)
    outcome = pd.DataFrame({"time": time, "event": event}, index=design.index)
    tables = []
    for aggregator, risks in risk_by_aggregator.items():
        tables.extend(_cox_with_and_without_risk(design, outcome, aggregator, risks, penalizer))
    if not tables:
        return pd.DataFrame(columns=_COX_COLUMNS)
    return pd.concat(tables, ignore_index=True)[_COX_COLUMNS]


_COX_COLUMNS = [
    "aggregator",
    "model",
    "term",
    "coef",
    "hazard_ratio",
    "hr_ci_low",
    "hr_ci_high",
    "p",
    "n",
    "n_events",
    "lr_chi2",
    "lr_df",
    "lr_p",
]


def _clinical_design(frame: pd.DataFrame) -> pd.DataFrame:
    """The clinical columns standardised and one-hot encoded (:class:`ClinicalPreprocessor`
    fitted on the whole cohort), each categorical column's first level dropped as its
    reference; indexed by patient id (as text)."""
    pre = ClinicalPreprocessor(scaling="standard").fit(frame)
    encoded = pd.DataFrame(
        pre.transform(frame), index=frame.index.astype(str), columns=pre.feature_names_
    )
    references = [c.features[0] for c in pre.columns_.values() if c.kind == "categorical"]
    return encoded.drop(columns=references).astype(np.float64)


def _cox_with_and_without_risk(
    design: pd.DataFrame,
    outcome: pd.DataFrame,
    aggregator: str,
    risks: pd.DataFrame | pd.Series,
    penalizer: float,
) -> list[pd.DataFrame]:
    """The clinical-only and the clinical+risk Cox fits of one aggregator on the patients
    with a risk, each fit's terms with the likelihood-ratio test between them."""
    risk = risks if isinstance(risks, pd.Series) else zscore_by_fold(risks)
    risk.index = risk.index.astype(str)
    unknown = risk.index.difference(design.index)
    if len(unknown):
        raise RadiopathInputError(
            f"risk of a patient without a clinical row ({len(unknown)} such)",
            patient_id=str(unknown[0]),
            field=f"risk:{aggregator}",
        )
    ids = risk.index
    t, e = outcome.loc[ids, "time"].to_numpy(), outcome.loc[ids, "event"].to_numpy()
    base = design.loc[ids]
    clinical = _fit_cox(base, t, e, penalizer)
    full = _fit_cox(base.assign(risk=risk.to_numpy()), t, e, penalizer)
    lr = max(2.0 * (full.log_likelihood - clinical.log_likelihood), 0.0)
    return [
        fit.terms.assign(
            aggregator=aggregator,
            model=name,
            n=len(ids),
            n_events=int(e.sum()),
            lr_chi2=lr,
            lr_df=1,
            lr_p=float(chi2.sf(lr, 1)),
        )
        for name, fit in (("clinical", clinical), ("clinical+risk", full))
    ]
