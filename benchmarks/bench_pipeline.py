"""Wall time of the whole benchmark pipeline, stage by stage, on a synthetic cohort.

Default: the paper's cohort size, 205 patients x 2 modalities with about 2k-10k patches per
bag, three aggregators (SPARRA, ABMIL, mean), four downstream models, 5-fold CV. Prints
one row per stage (graphs, train:<agg>, evaluate:<agg>, report), the total, the peak
resident memory, and the importance recovery of the planted regions.

    python benchmarks/bench_pipeline.py                        # 205 patients, default recipe
    python benchmarks/bench_pipeline.py --patients 80 --wsi 1000 2500 --ct 500 1200   # demo size
    python benchmarks/bench_pipeline.py --aggregators sparra --train '{"preset": "interpretable"}'
    python benchmarks/bench_pipeline.py --workers 2 --out /tmp/pipe   # folds in 2 processes

With ``--out`` an existing cohort there is reused (not drawn again) and a finished stage of
the run is skipped, so ``--fresh-run`` times the stages again on the same cohort and graphs
(the graph folder is kept).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd

from radiopath.benchmark import run_benchmark
from radiopath.datasets import make_synthetic_cohort
from radiopath.demo import comparison_table, importance_recovery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=205)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--wsi", type=int, nargs=2, default=(2000, 10000))
    parser.add_argument("--ct", type=int, nargs=2, default=(2000, 10000))
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: the training preset's schedule"
    )
    parser.add_argument("--backend", default="torch", choices=["torch", "sksurv"])
    parser.add_argument("--aggregators", default="sparra,abmil,mean")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="Keep the run here.")
    parser.add_argument(
        "--workers", type=int, default=None, help="local executor processes (default: this one)"
    )
    parser.add_argument(
        "--fresh-run",
        action="store_true",
        help="with --out: train, evaluate and report again, keeping the cohort and its graphs",
    )
    parser.add_argument(
        "--train",
        default="{}",
        help='training configuration as JSON, e.g. \'{"preset": "interpretable"}\'',
    )
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="radiopath-bench-"))
    t0 = time.perf_counter()
    cohort = out / "cohort" / "cohort.csv"
    if not cohort.exists():
        cohort = make_synthetic_cohort(
            out / "cohort",
            n_patients=args.patients,
            dim=args.dim,
            wsi_patches=tuple(args.wsi),
            ct_patches=tuple(args.ct),
            seed=0,
            progress=False,
        )
    if args.fresh_run and (out / "run").is_dir():
        for child in (out / "run").iterdir():  # everything but the graphs
            if child.name != "graphs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    stages = [("synthetic cohort", time.perf_counter() - t0)]
    last = [time.perf_counter()]

    def tick(stage: str) -> None:
        now = time.perf_counter()
        stages.append((stage, now - last[0]))
        last[0] = now

    config = {
        "aggregators": args.aggregators.split(","),
        "train": {**({"epochs": args.epochs} if args.epochs else {}), **json.loads(args.train)},
        "evaluation": {"backend": args.backend},
        "device": args.device,
        **({"executor": {"name": "local", "workers": args.workers}} if args.workers else {}),
    }
    start = time.perf_counter()
    last[0] = start
    result = run_benchmark(cohort, out / "run", config, progress=False, stage_hook=tick)
    total = time.perf_counter() - t0
    table = pd.DataFrame(stages, columns=["stage", "seconds"]).round(1)
    print(
        f"cohort: {args.patients} patients, WSI {args.wsi[0]}-{args.wsi[1]} and CT "
        f"{args.ct[0]}-{args.ct[1]} patches per bag, {args.dim}-d; epochs {args.epochs or 'from the preset'}; "
        f"backend {args.backend}; training config {args.train}"
    )
    print(table.to_string(index=False))
    print(
        f"total {total:.0f} s; peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )
    print(comparison_table(result.metrics))
    print(importance_recovery(out / "run", cohort.parent).round(3).to_string(index=False))
    print(f"run directory: {out / 'run'}")


if __name__ == "__main__":
    main()
