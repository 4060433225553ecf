"""Intervals and paired tests: does one aggregator really beat another?

A comparison's table says mean (sd) over outer folds; on a cohort of a few hundred patients a
difference of a few hundredths of C-index is often noise. This module adds, for each study
(model x metric, and the average over models):

* **an interval**: a patient-level bootstrap of the out-of-fold predictions. One replicate
  draws the cohort's patients with replacement, stratified by event (as many events and as
  many censored patients as the cohort has); every outer fold's metric is recomputed on its
  resampled test patients -- with that fold's own training censoring distribution, C-IPCW
  horizon and time grid, exactly as :mod:`radiopath.evaluation.protocol` scored the fold --
  and the replicate's value is the mean over all folds (over the R x K folds of repeated
  cross-validation: a patient drawn k times counts k times in every repeat). The statistic
  is therefore the number of the table (the mean over folds), and the interval is the
  percentile interval of its replicates. The downstream models, the censoring distributions
  and the time grids are held fixed: the interval is about the test patients, not about
  refitting (repeats add the variation of the splits to the point estimate).
* **a paired comparison** of every two aggregators (or sweep points) that share folds: the
  difference of their statistics on the *same* replicates, its percentile interval and the
  two-sided bootstrap p-value ``min(1, 2 min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1))``,
  and a Wilcoxon signed-rank test of the per-fold differences (``scipy.stats.wilcoxon``,
  folds x repeats; folds of different repeats share patients, so this one is optimistic).
  Each is Holm-corrected over the 19 studies of the pair (the fixed-horizon metrics are a
  family of their own).

The bootstrap is vectorised: a resample is a vector of patient multiplicities ``w``, and
every metric is a linear or quadratic form in ``w`` -- Harrell's and Uno's C are
``w^T A w / w^T D w`` over the comparable pairs, the cumulative/dynamic AUC is the same at
each time with the Kaplan-Meier weights of the resampled test data, the Brier score is
``w^T m / w^T 1`` -- so all B replicates of a fold are a few ``[B, n] @ [n, n]`` products.
Scoring a patient k times this way equals scoring the data set with k copies of the patient
(scikit-survival's functions on the duplicated data; the tests check it).

The parts live in their own modules: :mod:`.bootstrap` (the folds as the protocol scored
them, the replicates), :mod:`.weighted_metrics` (the metrics as forms in ``w``),
:mod:`.arms` (scoring one arm) and :mod:`.comparisons` (intervals, paired tests, Holm).
This module is the configuration and the run-directory analysis (:func:`analyse_run`,
:func:`analyse_runs`) and re-exports their public names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from radiopath.config_rules import Number
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.arms import ArmScores, score_arm
from radiopath.evaluation.bootstrap import FoldSetup as FoldSetup
from radiopath.evaluation.bootstrap import OutOfFold, bootstrap_weights, out_of_fold
from radiopath.evaluation.comparisons import (
    COMPARISON_COLUMNS,
    bootstrap_p,
    compare_arms,
    holm,
    intervals,
    paired_bootstrap,
)
from radiopath.evaluation.comparisons import INTERVAL_COLUMNS as INTERVAL_COLUMNS
from radiopath.evaluation.config import ordered_aggregators, resolve_evaluation_config
from radiopath.evaluation.weighted_metrics import horizon_metrics as horizon_metrics
from radiopath.runkit import config_fingerprint
from radiopath.typed_config import TypedConfig, setting

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STATISTICS",
    "Analysis",
    "ArmScores",
    "OutOfFold",
    "StatisticsConfig",
    "analyse_run",
    "analyse_runs",
    "bootstrap_p",
    "bootstrap_weights",
    "compare_arms",
    "holm",
    "intervals",
    "out_of_fold",
    "paired_bootstrap",
    "resolve_statistics_config",
    "score_arm",
    "statistics_config",
]

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StatisticsConfig(TypedConfig):
    """The intervals and paired tests of a report (a benchmark's ``statistics`` section)."""

    bootstrap: int = setting(1000, Number(low=1, integer=True), "Bootstrap replicates.")
    alpha: float = setting(
        0.05,
        Number(low=0, high=1, low_open=True, high_open=True),
        "Level: 1 - alpha intervals, significance at alpha after Holm.",
    )
    seed: int = setting(0, Number(low=0, integer=True), "Seed of the bootstrap resampling.")


DEFAULT_STATISTICS: dict = StatisticsConfig().to_dict()
"""The defaults of :class:`StatisticsConfig` as a plain dict."""


def resolve_statistics_config(config: Mapping | StatisticsConfig | None = None) -> dict:
    """Defaults <- ``config`` (None values keep the default), as a plain dict; a bad key or
    value is refused by its dotted name (``statistics.alpha``)."""
    return statistics_config(config).to_dict()


def statistics_config(config: Mapping | StatisticsConfig | None = None) -> StatisticsConfig:
    """:func:`resolve_statistics_config` as the frozen :class:`StatisticsConfig`."""
    if isinstance(config, StatisticsConfig):
        return config
    if config is not None and not isinstance(config, Mapping):
        raise RadiopathInputError(
            f"must be a mapping of {sorted(DEFAULT_STATISTICS)}, got {config!r}", field="statistics"
        )
    given = {k: v for k, v in (config or {}).items() if v is not None}
    return StatisticsConfig.from_mapping(given, "statistics")


# ----------------------------------------------------------------------------- run directories


@dataclass
class Analysis:
    """What :func:`analyse_run` found: ``intervals.csv`` and ``comparisons.csv`` tables."""

    intervals: pd.DataFrame
    comparisons: pd.DataFrame
    arms: list[ArmScores]
    config: StatisticsConfig
    n_patients: int
    n_folds: int
    n_repeats: int


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_id": str, "modalities": str}, **kw)


def _evaluation_settings(run_dir: Path, aggregator: str) -> dict:
    """The evaluation configuration an aggregator's metrics were computed with."""
    for path in (run_dir / "runs" / aggregator / "run.json", run_dir / "run.json"):
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        settings = (record.get("evaluation") or {}).get("settings") or {}
        if settings.get("config") is not None:
            return settings["config"]
        section = (record.get("config") or {}).get("evaluation")
        if isinstance(section, Mapping):
            return {k: v for k, v in section.items() if k != "backend"}
    return {}


def _run_tables(run_dir: Path):
    pred_path = run_dir / "predictions.csv"
    if not pred_path.exists():
        raise RadiopathInputError(
            "no predictions.csv: evaluate the run first (radiopath evaluate / benchmark)",
            path=pred_path,
        )
    preds = _read_csv(pred_path)
    surv_path = run_dir / "survival.csv"
    surv = _read_csv(surv_path) if surv_path.exists() else None
    if surv is None:
        log.warning("%s has no survival.csv: IBS and Brier intervals are left out", run_dir)
    folds_path = run_dir / "folds.csv"
    if folds_path.exists():
        from radiopath.training.folds import read_folds

        folds = read_folds(folds_path)
    else:
        log.warning("%s has no folds.csv: each fold's training set is taken as the rest", run_dir)
        folds = preds[["patient_id", "fold"]].drop_duplicates("patient_id").assign(repeat=0)
    return preds, surv, folds


def _score_runs(
    runs: Mapping[str, Path], cfg: StatisticsConfig
) -> tuple[dict[str, list[ArmScores]], OutOfFold]:
    """Score every arm of every run on one set of bootstrap replicates (shared folds)."""
    tables = {name: _run_tables(Path(d)) for name, d in runs.items()}
    folds = next(iter(tables.values()))[2]
    outcomes = pd.concat([t[0][["patient_id", "time", "event"]] for t in tables.values()])
    oofs: dict[str, OutOfFold] = {}
    weights = None
    scored: dict[str, list[ArmScores]] = {}
    for name, (preds, surv, _) in tables.items():
        arms = []
        for (agg, mods), part in preds.groupby(["aggregator", "modalities"], sort=False):
            settings = resolve_evaluation_config(_evaluation_settings(Path(runs[name]), agg))
            key = config_fingerprint(settings.metrics.to_dict())
            if key not in oofs:
                oofs[key] = out_of_fold(folds, outcomes, settings)
            oof = oofs[key]
            if weights is None:
                weights = bootstrap_weights(oof.event, cfg.bootstrap, cfg.seed)
            sv = None
            if surv is not None:
                sv = surv[(surv["aggregator"] == agg) & (surv["modalities"] == mods)]
            arms.append(score_arm(oof, weights, part, sv, aggregator=agg, modalities=mods))
        scored[name] = arms
    return scored, next(iter(oofs.values()))


def analyse_run(run_dir: str | os.PathLike, config: Mapping | None = None) -> Analysis:
    """Intervals of every aggregator and paired comparisons of every two, from the files.

    Reads ``predictions.csv``, ``survival.csv`` (IBS, Brier) and ``folds.csv`` of a
    benchmark (or evaluated training run) directory; ``config`` is the ``statistics``
    section (:data:`DEFAULT_STATISTICS`). Comparisons are ``later - earlier`` in
    :data:`radiopath.evaluation.config.AGGREGATOR_ORDER` within each modality set.
    """
    cfg = statistics_config(config)
    run_dir = Path(run_dir)
    scored, oof = _score_runs({"run": run_dir}, cfg)
    arms = scored["run"]
    alpha = cfg.alpha
    inter = pd.concat([intervals(a, alpha) for a in arms], ignore_index=True)
    comps = []
    for mods in dict.fromkeys(a.modalities for a in arms):
        group = {a.aggregator: a for a in arms if a.modalities == mods}
        order = ordered_aggregators(group)
        for i, b in enumerate(order):
            for a in order[i + 1 :]:
                comps.append(compare_arms(group[a], group[b], alpha))
    comparisons = (
        pd.concat(comps, ignore_index=True) if comps else pd.DataFrame(columns=COMPARISON_COLUMNS)
    )
    return Analysis(
        inter,
        comparisons,
        arms,
        cfg,
        n_patients=len(oof.patient_id),
        n_folds=len(oof.folds),
        n_repeats=len({f.repeat for f in oof.folds}),
    )


def analyse_runs(
    runs: Mapping[str, str | os.PathLike], config: Mapping | None = None
) -> pd.DataFrame:
    """Paired comparisons between runs (sweep points) with the same folds, per aggregator.

    ``runs`` maps a point's name to its run directory. Points are grouped by the content of
    their ``folds.csv``; within a group every two points are compared for each aggregator
    and modality set they share (``point_a - point_b``, later minus earlier in ``runs``),
    with the statistics of :func:`compare_arms`. Points with other folds are not compared.
    """
    cfg = statistics_config(config)
    groups: dict[str, dict[str, Path]] = {}
    for name, d in runs.items():
        path = Path(d) / "folds.csv"
        if not path.exists() or not (Path(d) / "predictions.csv").exists():
            log.warning("sweep point %s has no folds.csv / predictions.csv: not compared", name)
            continue
        groups.setdefault(path.read_text(), {})[name] = Path(d)
    frames = []
    for members in groups.values():
        if len(members) < 2:
            continue
        scored, _ = _score_runs(members, cfg)
        names = list(members)
        for i, nb in enumerate(names):
            for na in names[i + 1 :]:
                arms_b = {a.aggregator: a for a in scored[nb]}
                for arm_a in scored[na]:
                    arm_b = arms_b.get(arm_a.aggregator)
                    if arm_b is None:
                        continue
                    rows = compare_arms(arm_a, arm_b, cfg.alpha)
                    rows = rows.drop(columns=["aggregator_b"]).rename(
                        columns={"aggregator_a": "aggregator", "modalities": "modalities_a"}
                    )
                    rows.insert(0, "point_b", nb)
                    rows.insert(0, "point_a", na)
                    rows.insert(4, "modalities_b", arm_b.modalities)
                    frames.append(rows)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
