"""Benchmark: size and writing time of the report page against issue #18's targets.

Targets: the demo's ``report.html`` under 5 MB, written in under 5 s; the page of an 8-point
sweep under 20 MB.

``--run DIR`` times :func:`radiopath.report.write_report` on a copy of a finished run (the
run itself is not touched) and splits the time into its parts: the bootstrap statistics
(``--bootstrap``, default: the run's), the figures, the importance gallery and the page.
``--sweep DIR`` times :func:`radiopath.report.compare.write_comparison` on a copy of a sweep
folder. ``--make-sweep OUT --cohort CSV`` first runs a small 8-point sweep (SPARRA's top-k
ratio x training epochs, 3 aggregators, 3 folds) to have one. Imports (torch among them)
are not timed: a benchmark writes its report in the process that already loaded them.

    python -m radiopath demo --out /tmp/demo
    python benchmarks/bench_report.py --run /tmp/demo
    python benchmarks/bench_report.py --make-sweep /tmp/sweep --cohort /tmp/demo/cohort/cohort.csv
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

import radiopath.report as report
import radiopath.report.compare as compare

EXPERIMENT = {
    "name": "bench-report",
    "base": {
        "aggregators": ["sparra", "abmil", "mean"],
        "models": ["coxph", "fsvm"],
        "folds": 3,
        "train": {"batch_size": 8},
        "evaluation": {"backend": "torch", "cv": {"n_splits": 3}},
        "statistics": {"bootstrap": 100},
    },
    "grid": {"train.ratio": [0.1, 0.3, 0.5, 0.7], "train.epochs": [1, 2]},
}


def _timed(module, name: str, spent: dict[str, float], label: str) -> None:
    """Wrap ``module.name`` so that its wall and CPU time add up under ``label``."""
    inner = getattr(module, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
            spent[f"{label} cpu"] = spent.get(f"{label} cpu", 0.0) + time.process_time() - cpu

    setattr(module, name, wrapper)


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB ({path.read_text().count('<img')} images)"


def bench_run(run_dir: Path, bootstrap: int | None) -> None:
    spent: dict[str, float] = {}
    for name, label in (
        ("_statistics", "statistics"),
        ("_figures", "figures"),
        ("build_gallery", "gallery"),
        ("render", "page"),
    ):
        _timed(report, name, spent, label)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run_dir.name
        shutil.copytree(run_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("checkpoints"))
        stats = {"bootstrap": bootstrap} if bootstrap else None
        start, cpu = time.perf_counter(), time.process_time()
        written = report.write_report(copy, statistics=stats)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        page = total - spent.get("statistics", 0.0)
        print(f"run {run_dir}: report.html {_size(written['html'])}")
        print(
            f"  load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; CPU time "
            f"{cpu:.2f} s, of which statistics {spent.get('statistics cpu', 0):.2f} s and page "
            f"{cpu - spent.get('statistics cpu', 0):.2f} s"
        )
        print(
            f"  write_report {total:.2f} s = statistics {spent.get('statistics', 0):.2f} s + "
            f"page {page:.2f} s (figures {spent.get('figures', 0):.2f} s, gallery "
            f"{spent.get('gallery', 0):.2f} s, template {spent.get('page', 0):.2f} s)"
        )
        print(f"  targets: < 5 MB {'met' if written['html'].stat().st_size < 5e6 else 'MISSED'}")


def make_sweep(out: Path, cohort: Path) -> Path:
    from radiopath.sweep import Experiment, run_sweep

    exp = Experiment(EXPERIMENT["name"], "", EXPERIMENT["base"], EXPERIMENT["grid"])
    start = time.perf_counter()
    run_sweep(exp, cohort, out, progress=False)
    print(f"sweep of {len(exp.points())} points run in {time.perf_counter() - start:.0f} s")
    return out


def bench_sweep(sweep_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / sweep_dir.name
        shutil.copytree(
            sweep_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("checkpoints", "graphs")
        )
        start = time.perf_counter()
        page = compare.write_comparison(sweep=copy)
        took = time.perf_counter() - start
        points = len(compare.sweep_points(copy))
        print(f"sweep {sweep_dir} ({points} points): report.html {_size(page)}, {took:.2f} s")
        print(f"  target: < 20 MB {'met' if page.stat().st_size < 20e6 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="A finished run (e.g. the demo's folder).")
    parser.add_argument("--bootstrap", type=int, help="Replicates (default: the run's).")
    parser.add_argument("--sweep", type=Path, help="A finished sweep folder.")
    parser.add_argument("--make-sweep", type=Path, help="Run the 8-point sweep here first.")
    parser.add_argument("--cohort", type=Path, help="Cohort CSV of --make-sweep.")
    args = parser.parse_args()
    if args.run:
        bench_run(args.run, args.bootstrap)
    if args.make_sweep:
        if args.cohort is None:
            parser.error("--make-sweep needs --cohort")
        bench_sweep(make_sweep(args.make_sweep, args.cohort))
    elif args.sweep:
        bench_sweep(args.sweep)
    if not (args.run or args.sweep or args.make_sweep):
        parser.error("give --run, --sweep or --make-sweep")


if __name__ == "__main__":
    main()
