"""Benchmark: the 19-study downstream evaluation, scikit-survival vs the torch backend.

The paper's setting: 205 patients (164 train / 41 test per outer fold), 256-dimensional
patient embeddings, 5 outer folds, three aggregators (mean and ABMIL are screened by
univariate Cox, SPARRA is not), four models with inner 5-fold grid searches. Embeddings are
synthetic (:func:`radiopath.evaluation.synthetic.make_fold_embeddings`), one draw per
aggregator. Prints a table of wall-clock seconds per aggregator and model and the speed-up.

    python benchmarks/bench_evaluation.py                 # both backends, 3 aggregators
    python benchmarks/bench_evaluation.py --backends torch --device cuda
    python benchmarks/bench_evaluation.py --aggregators mean --folds 2   # quick look
    python benchmarks/bench_evaluation.py --backends torch --aggregators sparra --dim 128 \
        --together                      # the 19 studies of one aggregator in one call

Timings on a shared machine are noisy; run the two backends back to back.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import pandas as pd
import torch

from radiopath.evaluation import evaluate_folds, summarize
from radiopath.evaluation.synthetic import make_fold_embeddings


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--patients", type=int, default=205)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--aggregators", default="mean,abmil,sparra")
    ap.add_argument("--models", default="rsf,coxph,coxnet,fsvm")
    ap.add_argument("--backends", default="sksurv,torch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n-jobs", type=int, default=2, help="RSF trees / GridSearchCV jobs")
    ap.add_argument(
        "--summary", action="store_true", help="print the 19-study summary of each backend"
    )
    ap.add_argument(
        "--together",
        action="store_true",
        help="all models of an aggregator in one evaluate_folds call (as a user runs it)",
    )
    args = ap.parse_args()

    aggregators = args.aggregators.split(",")
    models = args.models.split(",")
    backends = args.backends.split(",")
    data = {
        a: make_fold_embeddings(args.patients, args.dim, n_folds=args.folds, seed=i, effect=0.8)[0]
        for i, a in enumerate(aggregators)
    }
    print(
        f"# {args.patients} patients x {args.dim} features, {args.folds} outer folds, "
        f"aggregators {aggregators}, models {models}"
    )
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"cuda={'yes: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no'}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows, metrics = [], {}
    for backend in backends:
        config = {"n_jobs": args.n_jobs, "rsf": {"n_jobs": args.n_jobs}}
        frames = []
        for a in aggregators:
            for m in [",".join(models)] if args.together else models:
                t0, c0 = time.perf_counter(), time.process_time()
                res = evaluate_folds(
                    data[a],
                    aggregator=a,
                    modalities="wsi+ct",
                    models=m.split(","),
                    backend=backend,
                    config=config,
                    device=args.device,
                )
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                frames.append(res.metrics)
                ci = res.metrics.query("metric == 'c_index'")["value"].mean()
                rows.append(
                    {
                        "backend": backend,
                        "aggregator": a,
                        "model": m,
                        "seconds": dt,
                        "cpu_seconds": cpu,
                        "c_index": ci,
                        "failed": int(res.metrics["value"].isna().sum()),
                    }
                )
                print(
                    f"{backend:>6} {a:>7} {m:>6}: {dt:7.1f} s  (CPU {cpu:5.1f} s)  C-index {ci:.3f}",
                    flush=True,
                )
        metrics[backend] = pd.concat(frames, ignore_index=True)
    table = pd.DataFrame(rows)
    per_model = table.pivot_table(index="model", columns="backend", values="seconds", aggfunc="sum")
    per_model.loc["total"] = per_model.sum()
    if {"sksurv", "torch"} <= set(per_model.columns):
        per_model["speed-up"] = per_model["sksurv"] / per_model["torch"]
    print("\nseconds summed over aggregators and folds")
    print(per_model.round(2).to_string())
    if {"sksurv", "torch"} <= set(metrics):
        a = metrics["sksurv"].set_index(["aggregator", "model", "fold", "metric"])["value"]
        b = metrics["torch"].set_index(["aggregator", "model", "fold", "metric"])["value"]
        diff = (a - b).abs().groupby(level="model").mean()
        print(
            "\nmean |sksurv - torch| of the test metrics per model (hyper-parameter choices may differ)"
        )
        print(diff.round(4).to_string())
    if args.summary:
        for backend, frame in metrics.items():
            print(f"\n## backend {backend}\n")
            print(summarize(frame))
    print(
        f"\nper-fold mean seconds: {np.round(table.groupby('backend')['seconds'].sum() / args.folds, 2).to_dict()}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory {peak:.0f} MiB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
