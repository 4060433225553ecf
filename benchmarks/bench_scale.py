"""Local vs Ray on one synthetic cohort: wall time and an identical-results check.

Three measurements, each checked file by file against the local run
(:func:`radiopath.faults.differences`: metrics, predictions, survival, selection and every
importance map, byte for byte):

1. **benchmark**: the demo-size benchmark (80 patients, SPARRA / ABMIL / mean, four models,
   5 folds) locally, then on a Ray instance with ``--workers`` CPUs (Ray's start-up is
   reported apart);
2. **sweep**: a ``--points``-point sweep (``train.ratio``) on Ray with 1 worker, then with
   ``--workers``, then locally (the reference for the files);
3. **per-unit times** of the local benchmark (a bag, a fold, an evaluation unit) and of a
   small extraction (one image, hand-crafted encoder), for projecting larger runs.

    python benchmarks/bench_scale.py                      # demo size, 2 workers
    python benchmarks/bench_scale.py --patients 40 --epochs 5 --out /tmp/scale
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

from radiopath.benchmark import run_benchmark
from radiopath.datasets import make_synthetic_cohort
from radiopath.demo import DEMO_BENCHMARK, DEMO_COHORT
from radiopath.executors import open_executor
from radiopath.faults import differences


def _timed_benchmark(cohort, out: Path, cfg: dict, executor=None) -> tuple[float, dict]:
    """Wall time of one benchmark and the seconds of each of its stages."""
    marks = [("start", time.perf_counter())]
    run_benchmark(
        cohort,
        out,
        cfg,
        progress=False,
        executor=executor,
        stage_hook=lambda s: marks.append((s, time.perf_counter())),
    )
    stages = {s: t - marks[i][1] for i, (s, t) in enumerate(marks[1:])}
    return marks[-1][1] - marks[0][1], stages


def bench_benchmark(cohort, out: Path, cfg: dict, workers: int) -> dict:
    local, stages = _timed_benchmark(cohort, out / "local", cfg)
    tic = time.perf_counter()
    with open_executor({"name": "ray", "workers": workers}) as ex:
        startup = time.perf_counter() - tic
        on_ray, _ = _timed_benchmark(cohort, out / "ray", cfg, ex)
    return {
        "local_s": local,
        "ray_s": on_ray,
        "ray_startup_s": startup,
        "ratio": on_ray / local,
        "ratio_with_startup": (on_ray + startup) / local,
        "identical": differences(out / "local", out / "ray") == [],
        "stages_s": stages,
    }


def bench_sweep(cohort, out: Path, cfg: dict, points: int, workers: int) -> dict:
    from radiopath.sweep import Experiment, run_sweep

    ratios = [round(0.1 + 0.6 * i / max(points - 1, 1), 3) for i in range(points)]
    exp = Experiment("scale", "", cfg, {"train.ratio": ratios})
    seconds = {}
    for name, n in (("ray_1", 1), (f"ray_{workers}", workers)):
        with open_executor({"name": "ray", "workers": n}) as ex:
            tic = time.perf_counter()
            run_sweep(exp, cohort, out / name, progress=False, executor=ex)
            seconds[name] = time.perf_counter() - tic
    tic = time.perf_counter()
    run_sweep(exp, cohort, out / "local", progress=False)
    seconds["local"] = time.perf_counter() - tic
    metrics = {k: pd.read_csv(out / k / "sweep_metrics.csv") for k in seconds}
    return {
        "points": points,
        "seconds": seconds,
        "speedup": seconds["ray_1"] / seconds[f"ray_{workers}"],
        "identical": all(m.equals(metrics["local"]) for m in metrics.values()),
    }


def per_unit(stages: dict, cfg: dict, n_bags: int) -> dict:
    """Seconds per unit of the local benchmark's stages."""
    folds = cfg["folds"] * cfg.get("repeats", 1)
    units = {"graphs (one bag)": stages["graphs"] / n_bags}
    for agg in cfg["aggregators"]:
        units[f"train {agg} (one fold)"] = stages[f"train:{agg}"] / folds
        units[f"evaluate {agg} (one model x fold)"] = stages[f"evaluate:{agg}"] / (
            folds * len(cfg["models"])
        )
    units["report (driver only)"] = stages["report"]
    return units


def extraction_per_image(out: Path) -> float:
    from radiopath.extract import extract_cohort
    from radiopath.synthetic_images import IMAGE_MODE_EXTRACT, make_synthetic_image_cohort

    images = make_synthetic_image_cohort(out / "images", n_patients=4, seed=0, progress=False)
    extract_cohort(images, out / "extracted", progress=False, **IMAGE_MODE_EXTRACT)
    report = pd.read_csv(out / "extracted" / "extract_report.csv")
    return float(report["seconds"].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=DEMO_COHORT["n_patients"])
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's schedule")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--skip", default="", help="comma-separated: benchmark,sweep,extract")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="radiopath-scale-"))
    skip = set(args.skip.split(","))
    cohort = make_synthetic_cohort(
        out / "cohort", **{**DEMO_COHORT, "n_patients": args.patients}, seed=0, progress=False
    )
    cfg = {**DEMO_BENCHMARK, "train": {"epochs": args.epochs} if args.epochs else {}}
    results: dict = {"patients": args.patients, "workers": args.workers}
    if "benchmark" not in skip:
        results["benchmark"] = bench_benchmark(cohort, out / "benchmark", cfg, args.workers)
        results["per_unit_s"] = per_unit(
            results["benchmark"].pop("stages_s"), cfg, 2 * args.patients
        )
    if "sweep" not in skip:
        sweep_cfg = {**cfg, "aggregators": ["sparra"], "models": ["coxph"], "folds": 3}
        results["sweep"] = bench_sweep(cohort, out / "sweep", sweep_cfg, args.points, args.workers)
    if "extract" not in skip:
        results["extract_s_per_image"] = extraction_per_image(out / "extract")
    (out / "scale.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"\nruns kept in {out}")


if __name__ == "__main__":
    main()
