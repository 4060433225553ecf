"""How well node importance finds the planted regions, with and without the graph encoder.

The synthetic cohort of the end-to-end test (90 patients, WSI only, 16-d features, planted
regions covering 4-20% of each slide's patches; ``radiopath.datasets``) is trained under
3-fold cross-validation for each configuration and seed, and every test patient's patch
importance is scored by the ROC AUC of the planted patches. Each trained model is exported
twice, once per importance mode:

* ``auc_selection`` -- weights traced back through the top-k permutations only, dropped
  nodes 0 (the paper and the reference code);
* ``auc_receptive`` -- also back through each convolution's propagation coefficients
  (``importance: receptive_field``);
* ``ceiling_selection`` -- the AUC a perfect selection of the same size would score (the
  kept patches all planted): the most ``auc_selection`` can reach;
* ``kept_planted`` -- the fraction of the patches kept by both top-k layers that are
  planted (the cohort's base rate is printed).

    python benchmarks/bench_importance.py                      # 4 configurations x 3 seeds
    python benchmarks/bench_importance.py --seeds 0 --configs paper,interpretable
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
from radiopath.graph import build_cohort_graphs
from radiopath.training import train_cross_validated

# The end-to-end test's cohort and schedule (tests/e2e/test_synthetic_recovery.py).
COHORT = dict(
    n_patients=90, dim=16, wsi_patches=(300, 600), ct_patches=(16, 32), signal="wsi", seed=1
)
BASE = {"epochs": 60, "lr": 1e-3, "batch_size": 16, "folds": 3}
CONFIGS = {
    "plain-mil": {"use_graph": False},
    "paper": {},
    "paper-pooled-dropout": {"pooling": {"dropout_position": "pooled"}},
    "interpretable": {"preset": "interpretable"},
}


def score(result, cohort_dir: Path) -> dict:
    aucs, ceilings, kept = [], [], []
    for pid in result.folds["patient_id"]:
        imp = pd.read_csv(result.importance_path(pid, "wsi"))["importance"].to_numpy()
        planted = load_planted_mask(cohort_dir, pid, "wsi")
        if not planted.any() or planted.all():
            continue
        aucs.append(roc_auc_score(planted, imp))
        n_kept = int((imp > 0).sum())
        if n_kept < len(imp):
            ideal = np.zeros(len(planted))
            ideal[np.argsort(~planted, kind="stable")[:n_kept]] = 1.0
            ceilings.append(roc_auc_score(planted, ideal))
        else:  # nothing dropped (plain MIL): the weights alone can rank perfectly
            ceilings.append(1.0)
        kept.append(planted[imp > 0].mean() if n_kept else np.nan)
    return {
        "auc": float(np.mean(aucs)),
        "ceiling": float(np.mean(ceilings)),
        "kept": float(np.nanmean(kept)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", default=None, help="keep runs here (default: a temp dir)")
    args = parser.parse_args()
    logging.getLogger("radiopath").setLevel(logging.WARNING)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_importance_"))
    cohort_dir = root / "cohort"
    csv = make_synthetic_cohort(cohort_dir, **COHORT, progress=False)
    build_cohort_graphs(csv, root / "graphs", modalities=["wsi"], progress=False)
    truth = pd.read_csv(cohort_dir / "truth.csv")
    base_rate = np.mean(
        [load_planted_mask(cohort_dir, p, "wsi").mean() for p in truth["patient_id"]]
    )
    rows = []
    for name in args.configs.split(","):
        for seed in args.seeds:
            tic = time.perf_counter()
            out = root / "runs" / f"{name}-{seed}"
            config = {**BASE, **CONFIGS[name], "seed": seed}
            row = {"config": name, "seed": seed}
            for mode in ("selection", "receptive_field"):
                # The second call reloads the finished checkpoints (importance is a
                # runtime key) and only re-traces the weights.
                result = train_cross_validated(
                    csv,
                    root / "graphs",
                    aggregator="sparra",
                    modalities="wsi",
                    out_dir=out,
                    config={**config, "importance": mode},
                    progress=False,
                )
                s = score(result, cohort_dir)
                if mode == "selection":
                    row.update(
                        c_index=round(result.mean_c_index, 3),
                        auc_selection=round(s["auc"], 3),
                        ceiling_selection=round(s["ceiling"], 3),
                        kept_planted=round(s["kept"], 3),
                    )
                else:
                    row["auc_receptive"] = round(s["auc"], 3)
            row["seconds"] = round(time.perf_counter() - tic)
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    print(f"\nplanted base rate {base_rate:.3f}; runs in {root}\n")
    print(table.to_string(index=False))
    print("\nmean over seeds:")
    print(table.drop(columns="seed").groupby("config", sort=False).mean().round(3).to_string())


if __name__ == "__main__":
    main()
