"""Clinical columns of a cohort as a numeric design matrix, fitted on a training fold only.

:class:`ClinicalPreprocessor` takes the clinical frame of a cohort
(:meth:`radiopath.io.Cohort.clinical_frame`: one row per patient, indexed by patient id),
decides what kind of variable each column is, and encodes it with scikit-learn's own
pieces in one :class:`~sklearn.compose.ColumnTransformer`:

==============  ===================================  ========================================
kind            encoding                             fitted on the training rows
==============  ===================================  ========================================
``numeric``     the number                           median imputation, then scaling
``ordinal``     a number from the ordinal map below  median imputation, then scaling
``categorical`` one-hot, a column per level          most-frequent imputation, the levels
==============  ===================================  ========================================

Scaling is min-max to [0, 1] (``scaling="minmax"``, as MeD-3D does) or zero mean and unit
variance (``"standard"``); one-hot columns are left as 0/1. Every statistic -- medians,
most frequent levels, levels, minima and maxima, means and deviations -- comes from the
rows passed to :meth:`~ClinicalPreprocessor.fit`, so with ``fit`` on a training fold the
test fold is encoded with the training fold's numbers (test values outside the training
range fall outside [0, 1]; a level the training fold never saw becomes all zeros).

**Ordinal map.** A text column is ordinal when every value reads as one of these (case,
spaces and a ``stage``/``grade`` prefix ignored); higher means more advanced disease:

* stage in roman or arabic numerals with an optional sub-stage letter: ``I`` 1, ``II`` 2,
  ``III`` 3, ``IV`` 4 (``0`` 0); ``A``/``B``/``C`` add 0, 0.1, 0.2 (``IIIB`` 3.1,
  ``Stage 2A`` 2.0);
* TNM categories with an optional ``c``/``p``/``y``/``r`` prefix: ``T0`` 0, ``Tis`` 0.5,
  ``T1``-``T4`` 1-4, sub-categories as above (``pT1a`` 1.0, ``pT1b`` 1.1, ``T3c`` 3.2);
  ``N0``-``N3`` 0-3; ``M0``/``M1`` 0/1 (``M1b`` 1.1);
* grade ``G1``-``G4`` (or ``Grade 1``, ``Grade II``) 1-4;
* ``TX``, ``NX``, ``MX``, ``GX`` (cannot be assessed) are missing values, imputed.

A column of numbers is ``numeric``; when its name says stage or grade (``stage``,
``t_stage``, ``grade``, ``pT``, ...) and its values are whole numbers it is labelled
``ordinal`` with the identity map (the encoding is the same). ``kinds={"col": "numeric" |
"ordinal" | "categorical"}`` overrides the inference and ``ordinal_maps={"col": {"low": 0,
"high": 1}}`` gives a column its own ordinal map (a value outside it is an error). Values
read as missing everywhere: empty, ``NA``, ``N/A``, ``NaN``, ``None``, ``null``, ``?``,
``.``, ``unknown``.

**Bad input.** A column missing or constant in every fitted row is dropped, with a
``logging`` warning naming it, and listed in ``dropped_``. A column that looks numeric or
ordinal (at least :data:`LOOKS_PARSEABLE` of its values read so) but has values that do not
raises :class:`~radiopath.errors.RadiopathInputError` naming the column and the first
patient whose value does not read; so does such a value met by ``transform``. A frame with
no usable column left raises with field ``clinical``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from radiopath.errors import RadiopathInputError

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "MISSING_TOKENS",
    "ClinicalColumn",
    "ClinicalPreprocessor",
    "parse_ordinal",
]

KINDS: tuple[str, ...] = ("numeric", "ordinal", "categorical")
SCALINGS: tuple[str, ...] = ("minmax", "standard")

MISSING_TOKENS: frozenset[str] = frozenset(
    {"", "na", "n/a", "nan", "none", "null", "?", ".", "unknown"}
)
"""Text values read as missing (compared stripped and lower-cased)."""

LOOKS_PARSEABLE = 0.8
"""Share of a column's values that must read as numbers (or ordinal codes) for the others
to count as typos rather than the column being categorical."""

_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
_SUBSTAGE = {"": 0.0, "A": 0.0, "B": 0.1, "C": 0.2}
_STAGE = re.compile(r"(?:STAGE|GRADE)?(IV|III|II|I|[0-4])([ABC]?)")
_GRADE = re.compile(r"G([1-4X])")
_TNM = re.compile(r"(?:[CPYR]{1,2})?([TNM])(IS|X|[0-4])([ABC]?)")
_ORDINAL_NAME = re.compile(r"(stage|grade|^[cpyr]{0,2}[tnmg](_?(stage|category|cat))?$)", re.I)


def parse_ordinal(value: str) -> float | None:
    """The ordinal code of one stage / grade / TNM value (module docstring), NaN for a
    value that reads as "cannot be assessed" (``TX``, ``GX``...), None when it does not
    read as any of them."""
    text = re.sub(r"[\s_]", "", str(value)).upper()
    match = _TNM.fullmatch(text)
    if match:
        category, level, sub = match.groups()
        if level == "X":
            return math.nan
        base = 0.5 if level == "IS" else float(level)
        if level == "IS" and category != "T":
            return None
        return base + _SUBSTAGE[sub]
    match = _GRADE.fullmatch(text)
    if match:
        return math.nan if match.group(1) == "X" else float(match.group(1))
    match = _STAGE.fullmatch(text)
    if match and not text.isdigit():  # plain numbers are numeric, read elsewhere
        level, sub = match.groups()
        return float(_ROMAN.get(level, level if level.isdigit() else 0)) + _SUBSTAGE[sub]
    return None


@dataclass
class ClinicalColumn:
    """How one kept source column is encoded.

    Attributes
    ----------
    name
        The source column.
    kind
        ``numeric``, ``ordinal`` or ``categorical``.
    features
        Its output columns, in :attr:`ClinicalPreprocessor.feature_names_` (one, or one per
        level of a categorical column: ``"sex=F"``).
    ordinal_map
        An ordinal column's own map (``ordinal_maps``); None for the built-in reading
        (:func:`parse_ordinal`) and for the other kinds.
    levels
        A categorical column's levels seen in the fitted rows.
    """

    name: str
    kind: str
    features: list[str] = field(default_factory=list)
    ordinal_map: dict | None = None
    levels: list[str] = field(default_factory=list)


def _is_missing(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in MISSING_TOKENS
    return bool(pd.isna(value))


def _as_number(value) -> float | None:
    """A float, or None when ``value`` is not a number (bools are 0/1)."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class ClinicalPreprocessor(TransformerMixin, BaseEstimator):
    """Encode a cohort's clinical columns; every statistic is fitted on the ``fit`` rows.

    Parameters
    ----------
    kinds
        Column -> ``"numeric"``, ``"ordinal"`` or ``"categorical"``, overriding the
        inferred kind (module docstring).
    ordinal_maps
        Column -> {value: code}: the column is ordinal with this map (values compared as
        stripped text, so ``{"1": 0}`` matches the number 1 as well).
    scaling
        ``"minmax"`` (default: each numeric or ordinal feature to [0, 1] over the training
        rows) or ``"standard"`` (zero mean, unit variance).

    Attributes
    ----------
    columns_ : dict[str, ClinicalColumn]
        Each kept source column, in frame order, with its kind and output columns.
    feature_names_ : list[str]
        The output columns: a numeric or ordinal column's name, ``"column=level"`` for
        each one-hot level.
    dropped_ : dict[str, str]
        Dropped source columns and why (``"all missing"``, ``"constant"``).
    transformer_ : sklearn.compose.ColumnTransformer
        The fitted imputers, scalers and one-hot encoder.

    Examples
    --------
    >>> frame = read_cohort("cohort.csv").clinical_frame()  # doctest: +SKIP
    >>> pre = ClinicalPreprocessor()  # doctest: +SKIP
    >>> x_train = pre.fit_transform(frame.loc[train_ids])  # doctest: +SKIP
    >>> x_test = pre.transform(frame.loc[test_ids])  # doctest: +SKIP
    """

    def __init__(
        self,
        kinds: Mapping[str, str] | None = None,
        ordinal_maps: Mapping[str, Mapping] | None = None,
        scaling: str = "minmax",
    ) -> None:
        self.kinds = kinds
        self.ordinal_maps = ordinal_maps
        self.scaling = scaling

    # ------------------------------------------------------------------ fitting

    def fit(self, frame: pd.DataFrame, y=None) -> ClinicalPreprocessor:
        """Infer each column's kind and fit the imputers, encoders and scalers on ``frame``.

        Parameters
        ----------
        frame
            ``[n, columns]``, indexed by patient id: the training rows only.
        y
            Ignored (scikit-learn's signature).
        """
        frame = self._check_frame(frame)
        self._check_settings(frame)
        if frame.empty:
            raise RadiopathInputError("no patient rows to fit on", field="clinical")
        self.columns_: dict[str, ClinicalColumn] = {}
        self.dropped_: dict[str, str] = {}
        for name in frame.columns:
            spec = self._infer(frame[name])
            values = self._encode(frame[name], spec)
            present = values.dropna()
            reason = (
                "all missing" if present.empty else "constant" if present.nunique() == 1 else None
            )
            if reason is not None:
                log.warning(
                    "clinical column %r is %s in the %d fitted rows; dropped",
                    name,
                    reason,
                    len(frame),
                )
                self.dropped_[str(name)] = reason
                continue
            if spec.kind == "categorical":
                spec.levels = sorted(present.astype(str).unique())
            self.columns_[str(name)] = spec
        if not self.columns_:
            raise RadiopathInputError(
                f"no usable clinical column (dropped: {self.dropped_ or 'none given'})",
                field="clinical",
            )
        self.transformer_ = self._column_transformer()
        self.transformer_.fit(self._encoded(frame))
        self._name_features()
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode ``frame`` with the fitted statistics.

        Returns
        -------
        numpy.ndarray
            ``[n, len(feature_names_)]`` float32, rows in ``frame``'s order.
        """
        if not hasattr(self, "transformer_"):
            raise RuntimeError("ClinicalPreprocessor is not fitted; call fit first")
        frame = self._check_frame(frame)
        absent = [c for c in self.columns_ if c not in frame.columns]
        if absent:
            raise RadiopathInputError(
                f"clinical columns seen at fit are missing: {absent}", field=absent[0]
            )
        out = self.transformer_.transform(self._encoded(frame))
        return np.asarray(out, dtype=np.float32)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check_frame(frame) -> pd.DataFrame:
        if not isinstance(frame, pd.DataFrame):
            raise RadiopathInputError(
                f"expected a pandas DataFrame indexed by patient id, got {type(frame).__name__}",
                field="clinical",
            )
        frame = frame.copy()
        frame.columns = [str(c) for c in frame.columns]
        frame.index = frame.index.astype(str)
        return frame

    def _check_settings(self, frame: pd.DataFrame) -> None:
        if self.scaling not in SCALINGS:
            raise RadiopathInputError(
                f"unknown scaling {self.scaling!r}; choose from {list(SCALINGS)}", field="scaling"
            )
        for name, kind in (self.kinds or {}).items():
            if kind not in KINDS:
                raise RadiopathInputError(
                    f"unknown kind {kind!r} for column {name!r}; choose from {list(KINDS)}",
                    field=str(name),
                )
        for name in [*(self.kinds or {}), *(self.ordinal_maps or {})]:
            if str(name) not in frame.columns:
                raise RadiopathInputError(
                    f"configured clinical column is not in the frame (columns: "
                    f"{list(frame.columns)})",
                    field=str(name),
                )

    def _infer(self, column: pd.Series) -> ClinicalColumn:
        """The kind of one column from its fitted values (module docstring)."""
        name = str(column.name)
        given_map = (self.ordinal_maps or {}).get(name)
        forced = (self.kinds or {}).get(name)
        if given_map is not None:
            if forced not in (None, "ordinal"):
                raise RadiopathInputError(
                    f"has an ordinal map but is configured as {forced!r}", field=name
                )
            return ClinicalColumn(
                name, "ordinal", ordinal_map={str(k): v for k, v in given_map.items()}
            )
        if forced is not None:
            return ClinicalColumn(name, forced)
        present = [v for v in column if not _is_missing(v)]
        if not present:
            return ClinicalColumn(name, "numeric")
        numbers = [_as_number(v) for v in present]
        if all(n is not None for n in numbers):
            whole = all(float(n).is_integer() for n in numbers)
            kind = "ordinal" if whole and _ORDINAL_NAME.search(name) else "numeric"
            return ClinicalColumn(name, kind)
        codes = [n if n is not None else parse_ordinal(v) for v, n in zip(present, numbers)]
        read = sum(c is not None for c in codes)
        if read == len(present):
            return ClinicalColumn(name, "ordinal")
        numeric_share = sum(n is not None for n in numbers) / len(present)
        ordinal_share = read / len(present)
        if max(numeric_share, ordinal_share) >= LOOKS_PARSEABLE:
            kind = "numeric" if numeric_share >= LOOKS_PARSEABLE else "ordinal"
            self._encode(column, ClinicalColumn(name, kind))  # raises, naming the patient
        return ClinicalColumn(name, "categorical")

    @staticmethod
    def _encode(column: pd.Series, spec: ClinicalColumn) -> pd.Series:
        """One column as floats (numeric, ordinal) or text (categorical); NaN = missing.
        A value that does not read raises, naming the column and its patient."""
        name = spec.name
        if spec.kind == "categorical":
            return pd.Series(
                [np.nan if _is_missing(v) else str(v).strip() for v in column],
                index=column.index,
                dtype=object,
            )
        out = np.full(len(column), np.nan)
        for i, (pid, value) in enumerate(column.items()):
            if _is_missing(value):
                continue
            if spec.ordinal_map is not None:
                key = str(value).strip()
                number = _as_number(value)
                if key not in spec.ordinal_map and number is not None and number.is_integer():
                    key = str(int(number))
                code = spec.ordinal_map.get(key)
                expected = f"one of {list(spec.ordinal_map)} (its ordinal map)"
            else:
                code = _as_number(value)
                if code is None and spec.kind == "ordinal":
                    code = parse_ordinal(value)
                expected = (
                    "a number" if spec.kind == "numeric" else "a number or a stage/grade/TNM code"
                )
            if code is None:
                raise RadiopathInputError(
                    f"clinical column {name!r} is {spec.kind} but {value!r} does not read as "
                    f"{expected}; fix the value, or set kinds={{{name!r}: 'categorical'}}",
                    patient_id=str(pid),
                    field=name,
                )
            out[i] = code
        return pd.Series(out, index=column.index, dtype=float)

    def _encoded(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {name: self._encode(frame[name], spec) for name, spec in self.columns_.items()},
            index=frame.index,
        )

    def _column_transformer(self) -> ColumnTransformer:
        scaler = MinMaxScaler() if self.scaling == "minmax" else StandardScaler()
        numbers = [n for n, s in self.columns_.items() if s.kind != "categorical"]
        categories = [n for n, s in self.columns_.items() if s.kind == "categorical"]
        parts = []
        if numbers:
            parts.append(
                ("number", make_pipeline(SimpleImputer(strategy="median"), scaler), numbers)
            )
        if categories:
            one_hot = OneHotEncoder(
                categories=[self.columns_[n].levels for n in categories],
                handle_unknown="ignore",
                sparse_output=False,
                dtype=np.float64,
            )
            parts.append(
                (
                    "category",
                    make_pipeline(SimpleImputer(strategy="most_frequent"), one_hot),
                    categories,
                )
            )
        return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)

    def _name_features(self) -> None:
        """``feature_names_`` in the transformer's output order, and each column's share."""
        self.feature_names_: list[str] = []
        for _, _, names in self.transformer_.transformers_:
            if names == "drop" or not len(names):
                continue
            for name in names:
                spec = self.columns_[name]
                spec.features = (
                    [f"{name}={level}" for level in spec.levels]
                    if spec.kind == "categorical"
                    else [name]
                )
                self.feature_names_ += spec.features
