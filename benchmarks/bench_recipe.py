"""Training recipes on a confounded synthetic cohort: what each aggregator learns, against the
cohort's ceilings.

The cohort (``radiopath.datasets`` defaults: a patient-level offset along the signal
direction on every patch, a decoy region, a planted extent unrelated to the outcome) is
written with its ceilings (C-index of the true risk, of an oracle ridge Cox on the planted
regions' mean, of one on the bag mean). Each (recipe, aggregator, seed) is trained under
5-fold cross-validation with both modalities, and reported by:

* ``c_index`` -- mean test C-index of the model's own risk over the folds;
* ``auc_wsi`` / ``auc_ct`` -- mean over test patients of the ROC AUC of patch importance
  for the planted patches (and the worst patient; ``branch_min``: the worst fold's mean,
  where maps that fail do so, one (fold, modality) branch at a time);
* ``region_bg`` / ``decoy_bg`` -- median ratio of the mean importance of planted (decoy)
  patches to that of background patches;
* ``train_c`` -- training C-index of the last epoch (how well the model fits);
* ``ceiling_wsi`` / ``ceiling_ct`` -- the best planted-patch AUC any map can reach on the
  cohort's graphs (each node's planted fraction; :func:`radiopath.demo.importance_ceiling`):
  near 1, a map's shortfall is the model's, not the clustering's.

    python benchmarks/bench_recipe.py                                   # paper vs learned
    python benchmarks/bench_recipe.py --cohort-seeds 0 1 2 --out /tmp/recipe
    python benchmarks/bench_recipe.py --recipes learned --aggregators sparra \\
        --cohort-seeds 0 1 2 --seeds 0 1 2                              # 3 x 3 runs
    python benchmarks/bench_recipe.py --recipes learned --aggregators abmil \\
        --override '{"use_graph": false}' --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from radiopath.datasets import load_planted_mask, make_synthetic_cohort
from radiopath.demo import importance_ceiling
from radiopath.graph import build_cohort_graphs
from radiopath.training import train_cross_validated

COHORT = dict(n_patients=150, dim=64, wsi_patches=(1500, 2500), ct_patches=(2000, 5000))
MODALITIES = ("wsi", "ct")


def score(result, cohort_dir: Path) -> dict:
    out = {"c_index": round(result.mean_c_index, 3)}
    for m in MODALITIES:
        aucs, region, decoy, folds = [], [], [], []
        for pid, fold in zip(result.folds["patient_id"], result.folds["fold"]):
            imp = pd.read_csv(result.importance_path(pid, m))["importance"].to_numpy()
            planted = load_planted_mask(cohort_dir, pid, m)
            aucs.append(roc_auc_score(planted, imp))
            folds.append(fold)
            decoy_path = cohort_dir / "truth" / f"{pid}.{m}.decoy.npy"
            d = np.load(decoy_path) if decoy_path.exists() else np.zeros_like(planted)
            bg = imp[~(planted | d)].mean()
            region.append(imp[planted].mean() / bg if bg > 0 else np.nan)
            decoy.append(imp[d].mean() / bg if bg > 0 and d.any() else np.nan)
        out[f"auc_{m}"] = round(float(np.mean(aucs)), 3)
        out[f"auc_{m}_min"] = round(float(np.min(aucs)), 3)
        by_fold = pd.Series(aucs).groupby(np.asarray(folds)).mean()
        out[f"auc_{m}_branch_min"] = round(float(by_fold.min()), 3)
        out[f"region_bg_{m}"] = round(float(np.nanmedian(region)), 2)
        out[f"decoy_bg_{m}"] = round(float(np.nanmedian(decoy)), 2)
    logs = [pd.read_csv(p).iloc[-1] for p in sorted((result.out_dir / "logs").glob("fold_*.csv"))]
    out["train_c"] = round(float(np.mean([row["train_c_index"] for row in logs])), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="training seeds (default 0); with --cohort-seeds, each cohort with each seed",
    )
    parser.add_argument("--recipes", default="paper,learned", help="training presets")
    parser.add_argument("--aggregators", default="sparra,abmil,mean")
    parser.add_argument("--override", default="{}", help="JSON training config on top")
    parser.add_argument(
        "--tag", default="", help="appended to each run's folder name (runs kept apart by it)"
    )
    parser.add_argument(
        "--cohort-seeds",
        type=int,
        nargs="+",
        default=None,
        help="one cohort per seed, trained with the same seed unless --seeds is given",
    )
    parser.add_argument("--cohort-seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="keep runs here (default: a temp dir)")
    args = parser.parse_args()
    logging.getLogger("radiopath").setLevel(logging.WARNING)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_recipe_"))
    if args.cohort_seeds:
        seeds = args.seeds
        pairs = [(c, s) for c in args.cohort_seeds for s in (seeds if seeds else [c])]
    else:
        pairs = [(args.cohort_seed, s) for s in args.seeds or [0]]
    override = json.loads(args.override)
    rows = []
    for cohort_seed in sorted({c for c, _ in pairs}):
        base = root / f"cohort{cohort_seed}"
        cohort_dir = base / "cohort"
        if not (cohort_dir / "cohort.csv").exists():
            make_synthetic_cohort(cohort_dir, seed=cohort_seed, progress=False, **COHORT)
            build_cohort_graphs(cohort_dir / "cohort.csv", base / "graphs", progress=False)
        ceilings = json.loads((cohort_dir / "ceilings.json").read_text())
        map_ceiling = importance_ceiling(base / "graphs", cohort_dir).set_index("modality")
        print(
            f"cohort {cohort_seed} ceilings:",
            {k: round(v, 3) for k, v in ceilings.items() if isinstance(v, float)},
            "maps:",
            {m: round(float(map_ceiling.loc[m, "mean"]), 3) for m in MODALITIES},
        )
        for recipe in args.recipes.split(","):
            for aggregator in args.aggregators.split(","):
                for seed in [s for c, s in pairs if c == cohort_seed]:
                    tic = time.perf_counter()
                    result = train_cross_validated(
                        cohort_dir / "cohort.csv",
                        base / "graphs",
                        aggregator=aggregator,
                        modalities=",".join(MODALITIES),
                        out_dir=base / "runs" / f"{recipe}-{aggregator}-{seed}{args.tag}",
                        config={"preset": recipe, "seed": seed, **override},
                        progress=False,
                    )
                    row = {
                        "cohort": cohort_seed,
                        "recipe": recipe,
                        "aggregator": aggregator,
                        "seed": seed,
                        "oracle": round(ceilings["oracle_region_mean"], 3),
                        "bag_mean": round(ceilings["mean_pooling"], 3),
                    }
                    row.update(score(result, cohort_dir))
                    for m in MODALITIES:
                        row[f"ceiling_{m}"] = round(float(map_ceiling.loc[m, "mean"]), 3)
                    row["seconds"] = round(time.perf_counter() - tic)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print(f"\nruns in {root}\n")
    print(table.to_string(index=False))
    if table["seed"].nunique() > 1:
        keys = ["cohort", "recipe", "aggregator"]
        cols = ["c_index", "auc_wsi", "auc_ct"]
        summary = table.groupby(keys)[cols].agg(["mean", "min"]).round(3)
        print("\nover training seeds (mean, worst):\n")
        print(summary.to_string())


if __name__ == "__main__":
    main()
