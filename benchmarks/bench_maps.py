"""Where importance maps fall short: single models, their combinations, the patients missed.

Works on runs written by ``bench_recipe.py``.

Reads the single-model runs (``ensemble: 1``) of several training seeds on one cohort,
``ROOT/cohort<C>/runs/<recipe>-<aggregator>-<seed><tag>``, and prints, per modality:

* each model's mean planted-patch AUC and its mean per outer fold of its own run (one
  (fold, model) branch at a time);
* the AUC of the members' maps combined by several rules, each map first taken as its
  share of the bag: ``mean`` (the rule of ``ensemble: K``, there on nodes rather than
  patches), ``median``, ``geometric`` mean, ``ranks`` (mean of the members' patch ranks),
  ``agreement`` (each member weighted by its mean rank correlation with the others, per
  patient);
* the clustering's ceiling (:func:`radiopath.demo.importance_ceiling`);
* the rank correlation, over patients, of each model's map AUC with the true risk.

    python benchmarks/bench_recipe.py --recipes learned --aggregators sparra \\
        --cohort-seeds 0 --seeds 0 1 2 --override '{"ensemble": 1}' --tag=-e1 --out /tmp/r
    python benchmarks/bench_maps.py --out /tmp/r --cohort-seed 0 --seeds 0 1 2 --tag=-e1

The members of ``ensemble: K`` at seed ``s`` start from seeds ``s .. s+K-1`` (weights and
inner split) on the outer folds of seed ``s``; single runs at those seeds each draw their own
outer folds, so the combinations here mix models trained on different training folds (every
patient is a test patient of each).
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from radiopath.datasets import load_planted_mask, load_truth
from radiopath.demo import importance_ceiling
from radiopath.training.folds import read_folds
from radiopath.viz.importance import planted_importance_auc, read_importance

MODALITIES = ("wsi", "ct")


def combined(maps: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The members' patch maps of one bag combined by each rule."""
    share = np.stack([m / m.sum() if m.sum() > 0 else m for m in maps])
    ranks = share.argsort(1).argsort(1).astype(float)
    agreement = np.nan_to_num(np.corrcoef(ranks)) if len(maps) > 1 else np.ones((1, 1))
    weight = ((agreement.sum(1) - 1) / max(len(maps) - 1, 1)).clip(0)
    weight = weight if weight.sum() > 0 else np.ones(len(maps))
    return {
        "mean": share.mean(0),
        "median": np.median(share, 0),
        "geometric": np.exp(np.log(share + 1e-12).mean(0)),
        "ranks": ranks.mean(0),
        "agreement": weight @ share / weight.sum(),
    }


def outer_folds(run: Path) -> pd.Series:
    """Outer fold of each patient in a run's first repeat (whose folds write the maps)."""
    folds = read_folds(run / "folds.csv")
    return folds[folds["repeat"] == 0].set_index("patient_id")["fold"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="bench_recipe.py's --out")
    parser.add_argument("--cohort-seed", type=int, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--recipe", default="learned")
    parser.add_argument("--aggregator", default="sparra")
    parser.add_argument("--tag", default="-e1")
    parser.add_argument("--members", type=int, default=3, help="members per combination")
    args = parser.parse_args()
    base = args.out / f"cohort{args.cohort_seed}"
    cohort = base / "cohort"
    runs = {s: base / "runs" / f"{args.recipe}-{args.aggregator}-{s}{args.tag}" for s in args.seeds}
    eta = load_truth(cohort).set_index("patient_id")["eta"]
    folds = {s: outer_folds(run) for s, run in runs.items()}
    rows = []
    for pid in sorted(folds[args.seeds[0]].index):
        for m in MODALITIES:
            mask = load_planted_mask(cohort, pid, m)
            maps = {}
            for s, run in runs.items():
                path = run / "importance" / args.aggregator / f"{pid}.{m}.csv"
                maps[s] = read_importance(path)[1]
            row = {"patient_id": pid, "modality": m, "eta": eta[pid]}
            for s, values in maps.items():
                row[f"seed {s}"] = planted_importance_auc(values, mask)
                row[f"fold {s}"] = int(folds[s][pid])
            for group in combinations(args.seeds, min(args.members, len(args.seeds))):
                for rule, values in combined([maps[s] for s in group]).items():
                    row[f"{rule} {group}"] = planted_importance_auc(values, mask)
            rows.append(row)
    table = pd.DataFrame(rows)
    single = [f"seed {s}" for s in args.seeds]
    for m in MODALITIES:
        sub = table[table.modality == m]
        print(f"\n== {m}: mean AUC of each model, and per outer fold ==")
        per_fold = pd.DataFrame(
            {f"seed {s}": sub.groupby(f"fold {s}")[f"seed {s}"].mean() for s in args.seeds}
        ).T.rename_axis(columns="fold")
        print(per_fold.assign(all=sub[single].mean()).round(3))
        print(f"\n== {m}: members combined (mean AUC over patients) ==")
        own = [f"fold {s}" for s in args.seeds]
        combos = sub.drop(columns=["patient_id", "modality", "eta", *single, *own]).mean()
        names = pd.Series(combos.index)
        frame = pd.DataFrame(
            {
                "rule": names.str.split(" ", n=1).str[0].to_numpy(),
                "members": names.str.split(" ", n=1).str[1].to_numpy(),
                "auc": combos.to_numpy(),
            }
        )
        print(frame.pivot(index="members", columns="rule", values="auc").round(3))
        corr = {s: spearmanr(sub[s], sub["eta"], nan_policy="omit")[0] for s in single}
        print(f"\n== {m}: rank correlation of a patient's map AUC with the true risk ==")
        print({k: round(float(v), 2) for k, v in corr.items()})
    ceiling = importance_ceiling(base / "graphs", cohort).set_index("modality")["mean"]
    print("\nclustering ceiling:", {m: round(float(ceiling[m]), 3) for m in MODALITIES})


if __name__ == "__main__":
    main()
