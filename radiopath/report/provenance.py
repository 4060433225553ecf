"""Where a run's numbers come from: its configuration, versions, seeds, timings and problems.

Everything is read from the files the stages wrote: ``run.json`` (the resolved
configuration, package versions, git commit, platform, start and end, the files the cohort
reader skipped), ``stages.json`` (the seconds each benchmark stage took) and, for the
stages of each aggregator, ``runs/<aggregator>/run.json`` (training and evaluation times).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from radiopath.runkit import Ledger, read_json


@dataclass
class Provenance:
    """What the report's provenance section shows."""

    command: str | None = None
    status: str | None = None
    started: str | None = None
    finished: str | None = None
    git_commit: str | None = None
    platform: str | None = None
    argv: str = ""
    error: str | None = None
    config: dict = field(default_factory=dict)
    config_text: str = ""
    versions: dict = field(default_factory=dict)
    seeds: dict = field(default_factory=dict)
    timings: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    resumed: int = 0
    clinical: dict = field(default_factory=dict)


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}`` (lists stay values)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _seconds(start: str | None, end: str | None) -> float | None:
    try:
        a, b = _dt.datetime.fromisoformat(start), _dt.datetime.fromisoformat(end)
    except (TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def _sub_run_timings(run_dir: Path, stage: str) -> float | None:
    """Training or evaluation seconds of one aggregator from ``runs/<agg>/run.json``."""
    kind, _, agg = stage.partition(":")
    record = read_json(run_dir / "runs" / agg / "run.json", default={}) or {}
    if kind == "evaluate":
        record = record.get("evaluation") or {}
    return _seconds(record.get("started"), record.get("finished"))


def stage_timings(run_dir: Path) -> list[dict]:
    """Seconds per stage: recorded in ``stages.json``, else from the stage's own record."""
    ledger = Ledger(run_dir / "stages.json").units()  # radiopath.benchmark.stage_ledger
    rows = []
    for stage, entry in ledger.items():
        seconds = entry.get("seconds")
        if seconds is None and ":" in stage:
            seconds = _sub_run_timings(run_dir, stage)
        rows.append({"stage": stage, "seconds": seconds})
    if not ledger:  # a training run evaluated on its own
        record = read_json(run_dir / "run.json", default={}) or {}
        train = _seconds(record.get("started"), record.get("finished"))
        evaluation = record.get("evaluation") or {}
        rows += [
            {"stage": "train", "seconds": train},
            {
                "stage": "evaluate",
                "seconds": _seconds(evaluation.get("started"), evaluation.get("finished")),
            },
        ]
        rows = [r for r in rows if r["seconds"] is not None]
    return rows


def seeds(record: Mapping) -> dict[str, object]:
    """Every seed of a run: the run's own and each ``seed`` key of its configuration."""
    found = {"run": record.get("seed")} if record.get("seed") is not None else {}
    for key, value in flatten(record.get("config") or {}).items():
        if key.rsplit(".", 1)[-1] == "seed":
            found[key] = value
    return found


def read_provenance(run_dir: str | Path) -> Provenance:
    """The provenance of a run directory (empty fields where ``run.json`` is missing)."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json", default={}) or {}
    config = record.get("config") or {}
    return Provenance(
        command=record.get("command"),
        status=record.get("status"),
        started=record.get("started"),
        finished=record.get("finished"),
        git_commit=record.get("git_commit"),
        platform=record.get("platform"),
        argv=" ".join(str(a) for a in record.get("argv") or []),
        error=record.get("error"),
        config=config,
        config_text=yaml.safe_dump(
            json.loads(json.dumps(config, default=str)), sort_keys=False, width=100
        ),
        versions=dict(record.get("versions") or {}),
        seeds=seeds(record),
        timings=stage_timings(run_dir),
        skipped=[str(s) for s in record.get("skipped") or []],
        resumed=len(record.get("history") or []),
        clinical=dict(record.get("clinical") or {}),
    )
