"""Fusion strategies on a cohort whose signal is split between WSI, CT and a clinical marker.

The cohort (``radiopath.datasets``, ``signal="split"`` and ``clinical_effect``: one latent
factor per imaging modality, a third one seen only in the clinical columns ``marker`` and
``grade``; confounded bags by default) is trained under 5-fold cross-validation:

* each modality alone (``wsi``, ``ct``, ``clinical``);
* all three with every fusion (``concat``, ``mean``, ``attention``, ``late``);
* ``concat`` again with one imaging modality removed for ``--missing`` of the patients (the
  same folds), to price a missing modality;
* optionally (``--staged``) ``attention`` with staged training and with modality dropout.

Reported per run: mean test C-index of the model's own risk over the folds, training
seconds per fold (the ``seconds`` of the epoch logs), the run's wall and CPU seconds (one
torch thread: CPU seconds are what the run costs, whatever else the machine runs), and for ``mean`` / ``attention`` the
mean fusion weight of each modality over the test patients. The ceilings of the cohort
(``ceilings.json``) are printed beside them.

With ``--step-timing N`` it also times one training step (forward, backward, Adam; one
thread, CPU seconds) of the three in-model fusions on the same batches, interleaved N times:
the cost of a fusion itself, free of the run-to-run spread of whole folds (about 10% on a
shared machine).

    python benchmarks/bench_fusion.py --cohort-seeds 0 1 --out /tmp/fusion
    python benchmarks/bench_fusion.py --cohort-seeds 2 --out /tmp/fusion --step-timing 15
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from radiopath.datasets import make_synthetic_cohort
from radiopath.graph import build_cohort_graphs
from radiopath.training import train_cross_validated

COHORT = dict(
    n_patients=150,
    dim=32,
    wsi_patches=(800, 1500),
    ct_patches=(600, 1200),
    signal="split",
    effect=2.0,
    clinical_effect=1.0,
)
ALL = ["wsi", "ct", "clinical"]


def _without(cohort_csv: Path, fraction: float, seed: int) -> Path:
    """The cohort with WSI or CT removed (at random) for ``fraction`` of the patients."""
    table = pd.read_csv(cohort_csv)
    rng = np.random.default_rng(seed)
    drop = rng.uniform(size=len(table)) < fraction
    which = np.where(rng.uniform(size=len(table)) < 0.5, "wsi", "ct")
    for m in ("wsi", "ct"):
        table.loc[drop & (which == m), m] = np.nan
    out = cohort_csv.with_name(f"cohort_missing{int(fraction * 100)}.csv")
    table.to_csv(out, index=False)
    return out


def _fold_seconds(run_dir: Path) -> float:
    logs = sorted((run_dir / "logs").glob("fold_*.csv"))
    if not logs:  # late fusion: the unimodal models' time
        return sum(_fold_seconds(d) for d in sorted((run_dir / "unimodal").iterdir()))
    return float(np.mean([pd.read_csv(p)["seconds"].sum() for p in logs]))


def _weights(run_dir: Path) -> dict:
    path = run_dir / "fusion_weights.csv"
    if not path.exists():
        return {}
    table = pd.read_csv(path)
    return {c: round(float(table[c].mean()), 3) for c in table.columns if c.startswith("weight_")}


def run_cohort(seed: int, root: Path, args) -> list[dict]:
    cohort_dir = root / f"cohort{seed}"
    csv = cohort_dir / "cohort.csv"
    if not csv.exists():
        spec = {**COHORT, **json.loads(args.cohort)}
        make_synthetic_cohort(cohort_dir, seed=seed, progress=False, **spec)
    graphs = cohort_dir / "graphs"
    if not (graphs / "manifest.csv").exists():
        build_cohort_graphs(csv, graphs, progress=False)
    ceilings = json.loads((cohort_dir / "ceilings.json").read_text())
    base = {"seed": seed, **json.loads(args.override)}
    runs = [(m, [m], {}, csv) for m in ALL]
    runs += [(f, ALL, {"fusion": f}, csv) for f in ("concat", "mean", "attention", "late")]
    runs.append(
        (f"concat_missing{int(args.missing * 100)}", ALL, {}, _without(csv, args.missing, seed))
    )
    if args.staged:
        runs.append(
            (
                "attention_staged",
                ALL,
                {"fusion": "attention", "staged": {"unimodal_fraction": 0.3}},
                csv,
            )
        )
        runs.append(
            ("attention_dropout", ALL, {"fusion": "attention", "modality_dropout": 0.3}, csv)
        )
    rows, folds = [], None
    for name, mods, extra, cohort in runs:
        tic, cpu = time.perf_counter(), time.process_time()
        result = train_cross_validated(
            cohort,
            graphs,
            aggregator=args.aggregator,
            modalities=mods,
            out_dir=root / f"cohort{seed}" / "runs" / name,
            config={**base, **extra},
            folds=folds,
            progress=False,
        )
        folds = folds or result.out_dir / "folds.csv"  # every run on the first run's folds
        row = {
            "cohort": seed,
            "run": name,
            "c_index": round(result.mean_c_index, 3),
            "fold_seconds": round(_fold_seconds(result.out_dir), 1),
            "wall_seconds": round(time.perf_counter() - tic, 1),
            # the process's CPU seconds: training runs on one thread, so this is the
            # figure that other jobs on the machine do not inflate
            "cpu_seconds": round(time.process_time() - cpu, 1),
            **_weights(result.out_dir),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"cohort": seed, "ceilings": ceilings}), flush=True)
    return rows


def step_timing(cohort_dir: Path, repeats: int) -> dict:
    """Median CPU milliseconds of one training step per in-model fusion (same 6 batches of
    16 patients, the three fusions interleaved ``repeats`` times)."""
    import torch

    from radiopath.io import read_cohort
    from radiopath.training.config import resolve_training_config
    from radiopath.training.cv import _training_inputs, clinical_table
    from radiopath.training.data import MappedGraphStore, collate
    from radiopath.training.fold_unit import fold_clinical
    from radiopath.training.loop import _fit_input_map, build_model

    torch.set_num_threads(1)
    cohort = read_cohort(cohort_dir / "cohort.csv")
    runs = {}
    for fusion in ("concat", "mean", "attention"):
        cfg = resolve_training_config({"fusion": fusion}, aggregator="sparra", modalities=ALL)
        clinical = clinical_table(cohort, cfg)
        inputs = _training_inputs(cohort, cohort_dir / "graphs", cfg, False, clinical)
        store, width = fold_clinical(inputs.store, clinical, inputs.records, cfg)
        torch.manual_seed(0)
        model = build_model(cfg, {**inputs.in_channels, "clinical": width}, False)
        _fit_input_map(model, inputs.records, store, cfg)
        mapped = MappedGraphStore(store, model)
        batches = [
            collate(inputs.records[i : i + 16], mapped, model.modalities) for i in range(0, 96, 16)
        ]
        runs[fusion] = (model.train(), torch.optim.Adam(model.parameters(), 1e-3), batches)
    times = {f: [] for f in runs}
    for _ in range(repeats):
        for fusion, (model, optimizer, batches) in runs.items():
            for b in batches:
                tic = time.process_time()
                optimizer.zero_grad()
                out = model(b, node_weights=False)
                (model.survival_loss(out, b.time, b.event) + out.aux_loss).backward()
                optimizer.step()
                times[fusion].append(time.process_time() - tic)
    base = statistics.median(times["concat"])
    return {
        f: {
            "ms_per_step": round(1000 * statistics.median(t), 2),
            "vs_concat": f"{100 * (statistics.median(t) / base - 1):+.1f}%",
        }
        for f, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--aggregator", default="sparra")
    parser.add_argument("--missing", type=float, default=0.3)
    parser.add_argument("--staged", action="store_true", help="also staged / dropout runs")
    parser.add_argument("--override", default="{}", help="JSON training config on top")
    parser.add_argument("--cohort", default="{}", help="JSON cohort settings on top of COHORT")
    parser.add_argument("--out", default=None, help="keep runs here (default: a temp dir)")
    parser.add_argument("--step-timing", type=int, default=0, help="interleaved repeats")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.out or tempfile.mkdtemp(prefix="bench_fusion_"))
    rows = []
    for seed in args.cohort_seeds:
        rows += run_cohort(seed, root, args)
        if args.step_timing:
            timing = step_timing(root / f"cohort{seed}", args.step_timing)
            print(json.dumps({"cohort": seed, "step_timing": timing}), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(root / "fusion.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
