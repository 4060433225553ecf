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
import math
from pathlib import Path

import pandas as pd

from radiopath.config import check_known_keys
from radiopath.errors import RadiopathInputError
from radiopath.io import Cohort
from radiopath.runkit import write_csv

log = logging.getLogger(__name__)

__all__ = [
    "CLINICAL_DEFAULTS",
    "ENDPOINT_DEFAULTS",
    "endpoint_horizon",
    "resolve_clinical_config",
    "resolve_endpoint_config",
    "write_clinical_outputs",
]

CLINICAL_DEFAULTS: dict = {
    "enabled": True,
    "tie_draws": 100,
    "cox_penalizer": 0.01,
    "leibovich": {
        "t_stage": None,
        "n_stage": None,
        "size": None,
        "grade": None,
        "necrosis": None,
        "size_unit": "cm",
    },
}

ENDPOINT_DEFAULTS: dict = {"horizon": None, "time_unit": "days", "score": "cox"}


def resolve_clinical_config(section: dict | None) -> dict:
    """The ``clinical`` section with its defaults; a bad key or value is named."""
    from radiopath.config import deep_merge

    section = dict(section or {})
    check_known_keys(section, CLINICAL_DEFAULTS, "clinical")
    cfg = deep_merge(CLINICAL_DEFAULTS, section)
    if not isinstance(cfg["enabled"], bool):
        raise RadiopathInputError(
            f"must be true or false, got {cfg['enabled']!r}", field="clinical.enabled"
        )
    draws = cfg["tie_draws"]
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise RadiopathInputError(
            f"must be a positive integer, got {draws!r}", field="clinical.tie_draws"
        )
    pen = cfg["cox_penalizer"]
    if (
        isinstance(pen, bool)
        or not isinstance(pen, (int, float))
        or not math.isfinite(pen)
        or pen < 0
    ):
        raise RadiopathInputError(
            f"must be a number >= 0, got {pen!r}", field="clinical.cox_penalizer"
        )
    if cfg["leibovich"]["size_unit"] not in ("cm", "mm"):
        raise RadiopathInputError(
            f"must be 'cm' or 'mm', got {cfg['leibovich']['size_unit']!r}",
            field="clinical.leibovich.size_unit",
        )
    return cfg


def resolve_endpoint_config(section: dict | None, cohort: Cohort | None = None) -> dict:
    """The ``endpoint`` section with its defaults (as the benchmark records it), its
    horizon checked to read (:func:`endpoint_horizon`) and, given the cohort, checked
    against the cohort's follow-up."""
    from radiopath.config import config_section
    from radiopath.evaluation.horizon import TIME_UNITS, check_horizon, parse_horizon

    section = dict(section or {})
    check_known_keys(section, ENDPOINT_DEFAULTS, "endpoint")
    cfg = {**ENDPOINT_DEFAULTS, **section}
    if cfg["time_unit"] not in TIME_UNITS:
        raise RadiopathInputError(
            f"unknown time unit {cfg['time_unit']!r}; choose from {list(TIME_UNITS)}",
            field="endpoint.time_unit",
        )
    if cfg["score"] not in ("cox", "binary"):
        raise RadiopathInputError(
            f"must be 'cox' or 'binary', got {cfg['score']!r}", field="endpoint.score"
        )
    if cfg["horizon"] is not None:
        with config_section("endpoint.horizon", whole="horizon"):
            horizon = parse_horizon(cfg["horizon"], cfg["time_unit"])
            if cohort is not None:
                check_horizon(cohort.times, cohort.events, horizon)
    return cfg


def endpoint_horizon(endpoint: dict) -> float | None:
    """The resolved ``endpoint`` section's horizon in the cohort's time unit (None: off)."""
    from radiopath.evaluation.horizon import parse_horizon

    if endpoint.get("horizon") is None:
        return None
    return parse_horizon(endpoint["horizon"], endpoint.get("time_unit", "days"))


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
    clinical: dict,
    endpoint: dict,
    *,
    seed: int = 0,
) -> tuple[list[Path], list[str]]:
    """Write the clinical stage's files into the benchmark folder ``out``.

    Parameters
    ----------
    clinical, endpoint
        Resolved sections (:func:`resolve_clinical_config`, :func:`resolve_endpoint_config`).

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
    if cohort.clinical_columns and clinical["enabled"]:
        frame = cohort.clinical_frame()
        time, event = cohort.times, cohort.events
        table = column_c_index(frame, time, event, n_draws=clinical["tie_draws"], seed=seed)
        mapping = {k: v for k, v in clinical["leibovich"].items() if k != "size_unit" and v}
        score = leibovich_score(frame, mapping, size_unit=clinical["leibovich"]["size_unit"])
        if score is None:
            absent = [k for k, c in leibovich_columns(frame, mapping).items() if c is None]
            notes.append(f"Leibovich score not computed: no column for {', '.join(absent)}")
        else:
            summary = concordance_summary(
                score.to_numpy(), time, event, n_draws=clinical["tie_draws"], seed=seed
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
                penalizer=clinical["cox_penalizer"],
            )
            written.append(write_csv(cox, out / "clinical" / "cox.csv"))
    horizon = endpoint_horizon(endpoint)
    if horizon is not None and risks:
        tables = [
            run_horizon_metrics(out / "runs" / agg, horizon, aggregator=agg, kind=endpoint["score"])
            for agg in risks
        ]
        written.append(write_csv(pd.concat(tables, ignore_index=True), out / "horizon_metrics.csv"))
    for note in notes:
        log.info("clinical stage: %s", note)
    return written, notes
