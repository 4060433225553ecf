"""The benchmark's optional clinical stage: clinical baselines and the horizon endpoint.

After every aggregator is evaluated, a benchmark whose cohort has clinical columns writes

* ``clinical/baselines.csv`` -- each clinical column as a risk score on its own (Harrell's
  C and the C-index with ties broken at random, :func:`~radiopath.clinical.baselines.column_c_index`),
  plus a ``leibovich`` row when the cohort holds the Leibovich score's five inputs;
* ``clinical/cox.csv`` -- per aggregator, the multivariable Cox model of the clinical
  columns with and without the aggregator's own out-of-fold risk (``runs/<agg>/risks.csv``)
  and the likelihood-ratio test between them (:func:`~radiopath.clinical.baselines.clinical_cox`);

and, when ``endpoint.horizon`` is set (with or without clinical columns),

* ``horizon_metrics.csv`` -- per aggregator and fold, the fixed-horizon classification
  metrics of its own out-of-fold risk (:func:`radiopath.evaluation.horizon.run_horizon_metrics`).

An aggregator without a risk of its own (``raw_mean``) is left out of ``cox.csv`` and
``horizon_metrics.csv``, with a note. Configuration (benchmark keys, checked before any
work starts)::

    clinical:
      enabled: true          # false: no clinical baselines even with clinical columns
      tie_draws: 100         # random orders of tied scores per C-index
      cox_penalizer: 0.01    # lifelines' ridge penalty of the Cox models
      leibovich:             # cohort column of each input (null: looked up by name)
        {t_stage: null, n_stage: null, size: null, grade: null, necrosis: null,
         size_unit: cm}
    endpoint:
      horizon: null          # "5y", "60m", "26w", "100d" or a number in the time unit
      time_unit: days        # unit of the cohort's time column: days, months, years
      score: cox             # cox: threshold at the training fold's event rate;
                             # binary: the risk is a binary head's logit, threshold 0
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from radiopath.config import config_section
from radiopath.config_rules import Flag, Kind, Number, OneOf
from radiopath.evaluation.horizon import TIME_UNITS, check_horizon, parse_horizon
from radiopath.io import Cohort
from radiopath.runkit import write_csv
from radiopath.typed_config import TypedConfig, section, setting

log = logging.getLogger(__name__)

__all__ = [
    "ClinicalConfig",
    "EndpointConfig",
    "LeibovichConfig",
    "write_clinical_outputs",
]

_COLUMN = Kind((str, type(None)), "a column name or null")


@dataclass(frozen=True)
class LeibovichConfig(TypedConfig):
    """The cohort column of each input of the Leibovich 2003 score (null: looked up by name)."""

    t_stage: str | None = setting(None, _COLUMN, "Column of the pT stage.")
    n_stage: str | None = setting(None, _COLUMN, "Column of the pN stage.")
    size: str | None = setting(None, _COLUMN, "Column of the tumour size.")
    grade: str | None = setting(None, _COLUMN, "Column of the nuclear grade.")
    necrosis: str | None = setting(None, _COLUMN, "Column of the necrosis (yes / no).")
    size_unit: str = setting("cm", OneOf(("cm", "mm")), "Unit of the size column.")

    def columns(self) -> dict[str, str]:
        """``{input: column}`` of the inputs given a column (the others are looked up)."""
        return {k: v for k, v in self.to_dict().items() if k != "size_unit" and v}


@dataclass(frozen=True)
class ClinicalConfig(TypedConfig):
    """Clinical baselines, run when the cohort has clinical columns."""

    enabled: bool = setting(
        True, Flag(), "false: no clinical baselines even with clinical columns."
    )
    tie_draws: int = setting(
        100, Number(low=1, integer=True), "Random orders of tied scores per C-index."
    )
    cox_penalizer: float = setting(
        0.01, Number(low=0), "lifelines' ridge penalty of the Cox models."
    )
    leibovich: LeibovichConfig = section(LeibovichConfig, LeibovichConfig.__doc__)


@dataclass(frozen=True)
class EndpointConfig(TypedConfig):
    """A fixed-horizon endpoint: classification metrics of every aggregator's own risk."""

    horizon: object = setting(
        None,
        doc="The horizon (null: none); its text is read with the time unit and checked "
        "against the cohort's follow-up when the benchmark is built.",
        allowed='null, a time in the time unit, or text: "5y", "60m", "26w", "100d"',
    )
    time_unit: str = setting("days", OneOf(tuple(TIME_UNITS)), "Unit of the cohort's time column.")
    score: str = setting(
        "cox",
        OneOf(("cox", "binary")),
        "cox: threshold at the training fold's event rate; binary: the risk is a binary "
        "head's logit, threshold 0.",
    )

    def horizon_time(self) -> float | None:
        """The horizon in the cohort's time unit (None: off)."""
        if self.horizon is None:
            return None
        return parse_horizon(self.horizon, self.time_unit)

    def check(self, cohort: Cohort | None = None) -> None:
        """Refuse a horizon that does not read (or, given the cohort, lies beyond its
        follow-up), naming ``endpoint.horizon``."""
        if self.horizon is None:
            return
        with config_section("endpoint.horizon", whole="horizon"):
            horizon = self.horizon_time()
            if cohort is not None:
                check_horizon(cohort.times, cohort.events, horizon)


def _own_risks(out: Path, aggregators, notes: list[str]) -> dict[str, Path]:
    found = {}
    for agg in aggregators:
        path = out / "runs" / agg / "risks.csv"
        if path.exists():
            found[agg] = path
        else:
            notes.append(
                f"{agg}: no risk of its own (no risks.csv); not in cox.csv or horizon_metrics.csv"
            )
    return found


def write_clinical_outputs(
    out: str | Path,
    cohort: Cohort,
    aggregators,
    clinical: ClinicalConfig,
    endpoint: EndpointConfig,
    *,
    seed: int = 0,
) -> tuple[list[Path], list[str]]:
    """Write the clinical stage's files into the benchmark folder ``out``.

    Parameters
    ----------
    clinical, endpoint
        The benchmark's built sections.

    Returns
    -------
    (paths written, notes)
        The notes say what was left out and why (no Leibovich inputs, an aggregator
        without its own risk), for the run's provenance.
    """
    from radiopath.clinical.baselines import (
        clinical_cox,
        column_c_index,
        concordance_summary,
        leibovich_columns,
        leibovich_score,
    )
    from radiopath.evaluation.horizon import run_horizon_metrics

    out = Path(out)
    notes: list[str] = []
    written: list[Path] = []
    risks = _own_risks(out, aggregators, notes)
    if cohort.clinical_columns and clinical.enabled:
        frame = cohort.clinical_frame()
        time, event = cohort.times, cohort.events
        table = column_c_index(frame, time, event, n_draws=clinical.tie_draws, seed=seed)
        mapping = clinical.leibovich.columns()
        score = leibovich_score(frame, mapping, size_unit=clinical.leibovich.size_unit)
        if score is None:
            absent = [k for k, c in leibovich_columns(frame, mapping).items() if c is None]
            notes.append(f"Leibovich score not computed: no column for {', '.join(absent)}")
        else:
            summary = concordance_summary(
                score.to_numpy(), time, event, n_draws=clinical.tie_draws, seed=seed
            )
            row = {"column": "leibovich", "kind": "score", "score": "Leibovich 2003", **summary}
            table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        written.append(write_csv(table, out / "clinical" / "baselines.csv"))
        if risks:
            cox = clinical_cox(
                frame,
                {agg: pd.read_csv(p, dtype={"patient_id": str}) for agg, p in risks.items()},
                time,
                event,
                penalizer=clinical.cox_penalizer,
            )
            written.append(write_csv(cox, out / "clinical" / "cox.csv"))
    horizon = endpoint.horizon_time()
    if horizon is not None and risks:
        tables = [
            run_horizon_metrics(out / "runs" / agg, horizon, aggregator=agg, kind=endpoint.score)
            for agg in risks
        ]
        written.append(write_csv(pd.concat(tables, ignore_index=True), out / "horizon_metrics.csv"))
    for note in notes:
        log.info("clinical stage: %s", note)
    return written, notes
