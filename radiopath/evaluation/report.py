"""Tables, risk groups and run-directory outputs of the downstream evaluation.

* :func:`summarize` -- the paper's Table 1 in markdown: per-study mean (sd) over folds, the
  average over models, and which aggregator wins how many of the 19 studies;
* :func:`km_risk_groups` -- high / low risk groups split at the mean (or median) training
  risk, Kaplan-Meier curves (lifelines) and the log-rank p-value (Gao et al. 2025, Fig. 4);
* :func:`evaluate_run` -- the protocol on a training run directory, writing
  ``predictions.csv``, ``metrics.csv``, ``selection.csv``, ``survival.csv``, ``summary.md``
  and ``figures/km_<aggregator>_<model>.png``, and recording itself in ``run.json``.

The summary tables live in :mod:`.tables`, the risk groups in :mod:`.risk_groups`; this
module is the run-directory evaluation and re-exports their public names.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from radiopath.config import deep_merge, git_commit, package_versions
from radiopath.errors import RadiopathInputError
from radiopath.evaluation.config import (
    MODELS,
    SURVIVAL_FUNCTION_MODELS,
    EvaluationConfig,
    resolve_evaluation_config,
)
from radiopath.evaluation.protocol import (
    METRIC_COLUMNS,
    PREDICTION_COLUMNS,
    SELECTION_COLUMNS,
    EvaluationResult,
    evaluate_folds,
)
from radiopath.evaluation.risk_groups import RiskGroups, km_risk_groups, pooled_risk_groups
from radiopath.evaluation.tables import METRIC_LABELS as METRIC_LABELS
from radiopath.evaluation.tables import (
    MODEL_LABELS,
    fold_statistics,
    studies,
    summarize,
    summary_blocks,
    win_counts,
)
from radiopath.evaluation.tables import _metric_label as _metric_label
from radiopath.evaluation.tables import _with_average as _with_average
from radiopath.evaluation.tables import table_head as table_head
from radiopath.io import read_fold_embeddings
from radiopath.runkit import (
    RunLock,
    atomic_path,
    digests,
    run_ledger,
    write_csv,
    write_json,
    write_text,
)

log = logging.getLogger(__name__)

__all__ = [
    "RiskGroups",
    "evaluate_run",
    "fold_statistics",
    "km_risk_groups",
    "pooled_risk_groups",
    "studies",
    "summarize",
    "summary_blocks",
    "win_counts",
]

SURVIVAL_COLUMNS = ["aggregator", "modalities", "model", "fold", "patient_id", "t", "survival"]
"""``survival.csv``: each test patient's predicted survival at its fold's metric time grid
and at the configured horizons (RSF, CoxPH, Coxnet)."""


# ----------------------------------------------------------------------------- run directory


def _read_run(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    if not path.exists():
        raise RadiopathInputError("run.json is missing: not a training run directory", path=path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RadiopathInputError(f"run.json is not valid JSON ({exc})", path=path) from exc
    cfg = record.get("config")
    if not isinstance(cfg, Mapping):
        raise RadiopathInputError("run.json has no 'config' mapping", path=path, field="config")
    for key in ("aggregator", "modalities"):
        if key not in cfg:
            raise RadiopathInputError(f"run.json config lacks '{key}'", path=path, field=key)
    return record


def _write_record(run_dir: Path, evaluation: dict) -> None:
    """Set the ``evaluation`` key of run.json, keeping everything training wrote."""
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    record["evaluation"] = evaluation
    write_json(path, record)


def _fold_files(run_dir: Path) -> list[Path]:
    folder = run_dir / "embeddings"
    files = sorted(folder.glob("fold_*.npz"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
    if not files:
        raise RadiopathInputError(
            "no fold embeddings (embeddings/fold_<k>.npz) in the run", path=folder
        )
    return files


def _km_figure(predictions: pd.DataFrame, selection: pd.DataFrame, title: str) -> Figure:
    fig = Figure(figsize=(10, 4))
    for i, split in enumerate(("mean", "median")):
        ax = fig.add_subplot(1, 2, i + 1)
        pooled_risk_groups(predictions, selection, split).plot(ax=ax, title=title)
    fig.tight_layout()
    return fig


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def survival_table(
    result: EvaluationResult, aggregator: str, modalities: str, horizons: Sequence[float] = ()
) -> pd.DataFrame:
    """Test patients' predicted survival at each fold's time grid and at ``horizons``.

    The grid is the one the fold's C-AUC and IBS use (:class:`PreparedFold.times`); a
    horizon outside the domain of a fold's survival function (beyond its training
    follow-up) is left out for that fold.
    """
    by_fold = {p.fold: p for p in result.prepared}
    frames = []
    for (model, fold), fm in result.fitted.items():
        if model not in SURVIVAL_FUNCTION_MODELS or fm.estimator is None:
            continue
        prep = by_fold[fold]
        columns: dict[float, np.ndarray] = {}
        if prep.times is not None and fm.test_survival is not None:
            columns.update(zip(prep.times.tolist(), np.asarray(fm.test_survival).T))
        extra = [h for h in horizons if h not in columns]
        if extra:
            functions = fm.estimator.predict_survival_function(prep.X_test)
            for h in extra:
                try:
                    columns[h] = np.array([float(fn(h)) for fn in functions])
                except ValueError as exc:
                    log.info("%s fold %d: no survival at horizon %g (%s)", model, fold, h, exc)
        for t, values in sorted(columns.items()):
            frames.append(
                pd.DataFrame(
                    {
                        "aggregator": aggregator,
                        "modalities": modalities,
                        "model": model,
                        "fold": fold,
                        "patient_id": prep.test_ids,
                        "t": float(t),
                        "survival": values,
                    }
                )
            )
    if not frames:
        return pd.DataFrame(columns=SURVIVAL_COLUMNS)
    return pd.concat(frames, ignore_index=True)[SURVIVAL_COLUMNS]


def evaluate_run(
    run_dir: str | os.PathLike,
    models: Sequence[str] | None = None,
    backend: str = "sksurv",
    config: Mapping | EvaluationConfig | None = None,
    device="auto",
    *,
    resume: bool = True,
    aggregator: str | None = None,
    executor=None,
) -> EvaluationResult:
    """Evaluate a training run directory and write the outputs of ``INTERFACE.md`` into it.

    Reads ``run.json`` (``config.aggregator``, ``config.modalities``, ``seed``, and an
    optional ``config.evaluation`` section) and ``embeddings/fold_<k>.npz``; writes
    ``predictions.csv``, ``metrics.csv``, ``selection.csv``, ``survival.csv``, ``summary.md`` and
    ``figures/km_<aggregator>_<model>.png``; records itself under the ``evaluation`` key of
    ``run.json`` (training's record is kept). With ``resume``, a finished evaluation of the
    same models, backend and configuration is read back instead of recomputed.
    ``aggregator`` names the run in the tables (default: the run's own aggregator; the
    benchmark's variants such as ``abmil_mil`` train ``abmil`` under another name).
    ``executor`` runs the fits (:func:`~radiopath.evaluation.evaluate_folds`).
    """
    run_dir = Path(run_dir)
    resolve_evaluation_config(config)  # a bad key or value is refused before the lock is taken
    with RunLock(run_dir, command="evaluate"):
        return _evaluate_run(run_dir, models, backend, config, device, resume, aggregator, executor)


def _evaluate_run(run_dir, models, backend, config, device, resume, aggregator, executor):
    record = _read_run(run_dir)
    run_cfg = record["config"]
    aggregator = str(aggregator or run_cfg["aggregator"])
    modalities = run_cfg["modalities"]
    mods = modalities if isinstance(modalities, str) else "+".join(modalities)
    seed = int(record.get("seed") or 0)
    cfg = _layered_config(run_cfg.get("evaluation"), config)
    models = list(models or MODELS)
    files = _fold_files(run_dir)
    settings = {
        "models": models,
        "backend": backend,
        "config": cfg.to_dict(),
        "aggregator": aggregator,
    }
    outputs = [
        run_dir / n for n in ("predictions.csv", "metrics.csv", "selection.csv", "survival.csv")
    ]
    # what the evaluation depends on: its settings and the fold embeddings as exported (a
    # retrained fold or another importance trace evaluates again)
    unit_config = {"settings": settings, "inputs": digests(run_dir, files)}
    if resume:
        previous = _finished_evaluation(run_dir, record, unit_config, outputs)
        if previous is not None:
            return previous

    folds = []
    for f in files:
        folds.append(read_fold_embeddings(f))
    evaluation = {
        "status": "running",
        "started": _now(),
        "finished": None,
        "settings": settings,
        "device": str(device),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "fold_files": [str(f.relative_to(run_dir)) for f in files],
    }
    _write_record(run_dir, copy.deepcopy(evaluation))
    try:
        result = evaluate_folds(
            folds,
            aggregator=aggregator,
            modalities=modalities,
            models=models,
            backend=backend,
            config=cfg,
            device=device,
            seed=seed,
            cache_dir=run_dir / ".evaluation_units",
            executor=executor,
        )
        figures = _write_evaluation(run_dir, result, aggregator, mods, models, cfg)
    except Exception as exc:
        evaluation.update(status="failed", finished=_now(), error=f"{type(exc).__name__}: {exc}")
        _write_record(run_dir, evaluation)
        raise
    n_failed = int(result.metrics["value"].isna().sum())
    evaluation.update(
        status="finished",
        finished=_now(),
        outputs=[
            "predictions.csv",
            "metrics.csv",
            "selection.csv",
            "survival.csv",
            "summary.md",
            *figures,
        ],
        failed_metric_rows=n_failed,
    )
    _write_record(run_dir, evaluation)
    run_ledger(run_dir).mark("evaluation", unit_config, outputs)
    shutil.rmtree(run_dir / ".evaluation_units", ignore_errors=True)  # finished: not needed
    return result


def _layered_config(base: Mapping | None, config) -> EvaluationConfig:
    """Defaults <- the run's own ``evaluation`` section <- ``config`` (a built
    :class:`EvaluationConfig` replaces the run's section whole)."""
    if isinstance(config, EvaluationConfig):
        return config
    merged = deep_merge(base or {}, (config or {}).get("evaluation", config or {}))
    return resolve_evaluation_config(merged)


def _finished_evaluation(
    run_dir: Path, record: dict, unit_config: dict, outputs: Sequence[Path]
) -> EvaluationResult | None:
    """The evaluation recorded in ``run.json``, read back from its tables when it finished
    with the same settings on the same fold embeddings (``unit_config``) and its ``outputs``
    are intact (the run's ledger, :func:`~radiopath.runkit.run_ledger`); None (evaluate
    again) otherwise."""
    if (record.get("evaluation") or {}).get("status") != "finished":
        return None
    if not run_ledger(run_dir).finished("evaluation", unit_config):
        return None
    log.info("evaluation of %s already finished with the same settings; reading it back", run_dir)
    pred = pd.read_csv(outputs[0], dtype={"patient_id": str, "modalities": str})
    met = pd.read_csv(outputs[1], dtype={"modalities": str}, keep_default_na=True)
    sel = pd.read_csv(outputs[2], dtype={"modalities": str})
    met["message"] = met["message"].fillna("")
    return EvaluationResult(pred, met, sel)


def _write_evaluation(
    run_dir: Path,
    result: EvaluationResult,
    aggregator: str,
    mods: str,
    models: Sequence[str],
    cfg: EvaluationConfig,
) -> list[str]:
    """Write the evaluation's tables, ``summary.md`` and one Kaplan-Meier figure per model
    with predictions; returns the figures' paths relative to ``run_dir``."""
    write_csv(result.predictions[PREDICTION_COLUMNS], run_dir / "predictions.csv")
    write_csv(result.metrics[METRIC_COLUMNS], run_dir / "metrics.csv")
    write_csv(result.selection[SELECTION_COLUMNS], run_dir / "selection.csv")
    write_csv(
        survival_table(result, aggregator, mods, cfg.metrics.horizons),
        run_dir / "survival.csv",
    )
    write_text(run_dir / "summary.md", summarize(result.metrics))
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures = []
    for m in models:
        pred = result.predictions[result.predictions["model"] == m]
        if pred.empty:
            continue
        path = fig_dir / f"km_{aggregator}_{m}.png"
        fig = _km_figure(pred, result.selection, f"{aggregator} ({mods}), {MODEL_LABELS.get(m, m)}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        figures.append(str(path.relative_to(run_dir)))
    return figures
