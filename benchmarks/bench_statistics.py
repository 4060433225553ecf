"""Benchmark: the intervals and paired tests of the report against issue #13's targets.

``null``: a cohort with no signal. 205 patients (outcomes of
:func:`radiopath.evaluation.synthetic.make_fold_embeddings`, shuffled against the embeddings),
three "aggregators" whose embeddings are independent Gaussian draws, 5 folds x 3 repeats,
the four downstream models (torch backend) -- the paper's 19 studies. The report's analysis
(:func:`radiopath.evaluation.stats.analyse_run`, B = 1000) is timed on the written run
directory, and the significant wins are counted as the summary counts them (the best
aggregator beats both others after Holm over the 19 studies, alpha = 0.05). Targets: at
most 1 of 19 studies a significant win, over 5 seeds; the analysis in under 30 s.

``planted``: two risk scores of 300 patients whose population C-index differs by 0.05
(exponential times, log-hazard eta ~ N(0, 1), about 40% censored; a = eta + N(0, 1)). Two
designs: ``nested`` -- b is a plus more noise (the two scores share a's error, as two
aggregators of the same embeddings do); ``independent`` -- b = eta + independent noise (the
hardest case for a paired test). Target: the paired bootstrap interval excludes 0 in most
seeds. ``equal`` (b = eta + independent N(0, 1), no difference) measures the size of the
test: how often the 95% interval wrongly excludes 0 (about 5% expected).

    python benchmarks/bench_statistics.py                    # both parts
    python benchmarks/bench_statistics.py --part planted --seeds 20
    python benchmarks/bench_statistics.py --part null --seeds 1 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.evaluation import evaluate_folds
from radiopath.evaluation.report import survival_table, win_counts
from radiopath.evaluation.stats import analyse_run, paired_bootstrap
from radiopath.evaluation.synthetic import make_fold_embeddings
from radiopath.io import FoldEmbeddings
from radiopath.training.folds import make_folds, write_folds

AGGREGATORS = ("mean", "abmil", "sparra")


def null_run(out: Path, seed: int, args) -> pd.DataFrame:
    """Evaluate three signal-free aggregators on shared repeated folds; write the run files."""
    folds0, _ = make_fold_embeddings(args.patients, 8, seed=seed)
    rng = np.random.default_rng([seed, 13])  # a stream independent of the outcomes' draws
    ids = folds0[0].patient_id
    order = rng.permutation(len(ids))  # outcomes shuffled against the embeddings
    time_, event = folds0[0].time[order], folds0[0].event[order]
    table = make_folds(ids, event, args.folds, seed=seed, repeats=args.repeats)
    write_folds(table, out / "folds.csv")
    frames = {"predictions": [], "survival": [], "metrics": []}
    for agg in AGGREGATORS:
        X = rng.normal(size=(len(ids), args.dim)).astype(np.float32)
        fold_embeddings = []
        for k, part in table.groupby("fold"):
            test = np.isin(ids, part["patient_id"])
            split = np.where(test, "test", "train")
            fold_embeddings.append(FoldEmbeddings(int(k), ids, split, time_, event, X))
        result = evaluate_folds(
            fold_embeddings,
            aggregator=agg,
            modalities="wsi+ct",
            models=args.models.split(","),
            backend="torch",
            device="cpu",
            seed=seed,
        )
        frames["predictions"].append(result.predictions)
        frames["metrics"].append(result.metrics)
        frames["survival"].append(survival_table(result, agg, "wsi+ct"))
    for name, parts in frames.items():
        pd.concat(parts, ignore_index=True).to_csv(out / f"{name}.csv", index=False)
    return pd.concat(frames["metrics"], ignore_index=True)


def part_null(args) -> None:
    print(
        f"null cohort: {args.patients} patients, {args.folds} folds x {args.repeats} repeats, "
        f"B = {args.bootstrap}, models {args.models}"
    )
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.keep) / f"seed{seed}" if args.keep else Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            metrics = null_run(out, seed, args)
            t_eval = time.perf_counter() - t0
            t0 = time.perf_counter()
            analysis = analyse_run(out, {"bootstrap": args.bootstrap, "seed": seed})
            t_stats = time.perf_counter() - t0
        wins = win_counts(metrics, analysis.comparisons, alpha=0.05)
        main = analysis.comparisons[analysis.comparisons["family"] == "studies"]
        row = {
            "seed": seed,
            "studies": int(wins["n_studies"].iloc[0]),
            **{f"wins_{r.aggregator}": int(r.wins) for r in wins.itertuples()},
            "significant_wins": int(wins["significant"].sum()),
            "pairs_holm<0.05": int((main["p_holm"] < 0.05).sum()),
            "pairs_raw_p<0.05": int((main["p"] < 0.05).sum()),
            "n_pair_tests": len(main),
            "wilcoxon_holm<0.05": int((main["p_wilcoxon_holm"] < 0.05).sum()),
            "evaluate_s": round(t_eval, 1),
            "bootstrap_report_s": round(t_stats, 2),
        }
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    print(
        f"significant wins per seed: max {table['significant_wins'].max()} of "
        f"{table['studies'].iloc[0]} (target <= 1); bootstrap of the report: "
        f"max {table['bootstrap_report_s'].max():.2f} s (target < 30 s)"
    )


def _planted(seed: int, n: int, design: str, sigma_b: float):
    rng = np.random.default_rng(seed)
    eta = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-eta))
    t_cens = rng.exponential(1.5, size=n)
    event = t_event <= t_cens
    time_ = np.minimum(t_event, t_cens)
    a = eta + rng.normal(size=n)
    if design == "nested":
        b = a + sigma_b * rng.normal(size=n)
    elif design == "equal":  # no difference: the size of the test
        b = eta + rng.normal(size=n)
    else:
        b = eta + sigma_b * rng.normal(size=n)
    return time_, event, a, b


# noise of b giving a population C-index 0.05 below a's (0.663 vs 0.613; measured on
# 400 000 patients with lifelines' concordance_index)
SIGMA_B = {"nested": 1.45, "independent": float(np.sqrt(1 + 1.45**2)), "equal": 1.0}


def part_planted(args) -> None:
    from lifelines.utils import concordance_index

    for design, sigma in SIGMA_B.items():
        t, e, a, b = _planted(10_000, 200_000, design, sigma)
        gap = concordance_index(t, -a, e) - concordance_index(t, -b, e)
        hits, deltas = 0, []
        t0 = time.perf_counter()
        seeds = max(args.seeds, 200) if design == "equal" else args.seeds
        for seed in range(seeds):
            res = paired_bootstrap(
                *_planted(seed, 300, design, sigma), n_boot=args.bootstrap, seed=seed
            )
            hits += res["ci_low"] > 0
            deltas.append(res["delta"])
        print(
            f"planted {design}: population delta {gap:.3f}; 300 patients, B = {args.bootstrap}: "
            f"interval excludes 0 in {hits} of {seeds} seeds (mean observed delta "
            f"{np.mean(deltas):.3f}; {time.perf_counter() - t0:.1f} s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--part", choices=["null", "planted", "all"], default="all")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--keep", help="Keep the null runs' files in this folder (seed<k>/).")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--patients", type=int, default=205)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="rsf,coxph,coxnet,fsvm")
    args = ap.parse_args()
    if args.part in ("planted", "all"):
        part_planted(args)
    if args.part in ("null", "all"):
        part_null(args)


if __name__ == "__main__":
    main()
