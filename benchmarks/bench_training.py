"""Training throughput and peak memory of the aggregators at the paper's cohort size.

205 patients x 2 modalities (WSI 2-D, CT 3-D), each graph with a uniform 1k-10k nodes and
about 6 neighbours per node, features of width ``--dim``. One outer fold (164 train / 41
test patients) is trained for ``--epochs`` epochs and exported (embeddings and importance
maps of all 41 test patients), and the time of the whole 5-fold x 20-epoch run is projected
from it. Graphs are held in memory; generation time is not counted.

    python benchmarks/bench_training.py                       # all aggregators, CPU
    python benchmarks/bench_training.py --aggregators sparra --device cuda --epochs 3
    python benchmarks/bench_training.py --aggregators sparra --threads 2 --no-tune-malloc

Columns: ``epoch_s`` seconds per epoch (training on 164 patients + validation pass on 41),
``train_graphs_s`` training graphs per second (each patient has 2), ``infer_graphs_s``
graphs per second in evaluation mode, ``export_s`` seconds to export one fold,
``fit_cpu_s`` the CPU seconds of the
process during training (less sensitive to other jobs on a shared machine than wall time;
with one thread it is the work done), ``train_graphs_per_cpu_s`` training graphs per CPU
second of the whole fit (its validation passes included),
``projected_5x20_min`` the projected wall time of a 5-fold, 20-epoch run, ``peak_rss_gb``
the process's peak resident memory (graphs included), ``peak_gpu_gb`` the CUDA peak.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.spatial import cKDTree
from torch_geometric.data import Data
from torch_geometric.utils import remove_self_loops, to_undirected

from radiopath.runtime import resolve_device
from radiopath.training.config import resolve_training_config
from radiopath.training.data import GraphStore, PatientRecord, mapping_source
from radiopath.training.export import export_fold
from radiopath.training.folds import make_folds
from radiopath.training.loop import fit_fold, predict


def make_graph(rng: np.random.Generator, n_nodes: int, dim: int, ndim: int) -> Data:
    side = int(np.ceil(n_nodes ** (1.0 / ndim))) + 1
    cells = rng.choice(side**ndim, size=n_nodes, replace=False)
    pos = np.stack(np.unravel_index(cells, (side,) * ndim), 1).astype(np.float32)
    _, idx = cKDTree(pos).query(pos, k=7)
    src = np.repeat(np.arange(n_nodes), 7)
    edge_index, _ = remove_self_loops(torch.from_numpy(np.stack([src, idx.reshape(-1)])).long())
    edge_index = to_undirected(edge_index, num_nodes=n_nodes)
    return Data(
        x=torch.from_numpy(rng.standard_normal((n_nodes, dim), dtype=np.float32)),
        edge_index=edge_index,
        assignment=torch.arange(n_nodes),
        patch_coords=torch.from_numpy(pos * 256).long(),
        source="synthetic",
    )


def make_cohort(
    patients: int, nodes: tuple[int, int], dim: int, seed: int
) -> tuple[dict, list[PatientRecord]]:
    """The benchmark's cohort: ``{(patient_id, modality): Data}`` (a 2-D WSI and a 3-D CT
    graph per patient, ``nodes[0]``-``nodes[1]`` nodes each, ``dim``-d features) and the
    patients' records (exponential times, 40% events)."""
    rng = np.random.default_rng(seed)
    graphs, records = {}, []
    for i in range(patients):
        pid = f"B{i:03d}"
        for m, ndim in (("wsi", 2), ("ct", 3)):
            n = int(rng.integers(nodes[0], nodes[1] + 1))
            graphs[(pid, m)] = make_graph(rng, n, dim, ndim)
        records.append(
            PatientRecord(
                pid, float(rng.exponential(50) + 1), int(rng.uniform() < 0.4), ("wsi", "ct")
            )
        )
    return graphs, records


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=205)
    parser.add_argument("--min-nodes", type=int, default=1000)
    parser.add_argument("--max-nodes", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--aggregators", default="sparra,abmil,mean")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (config num_threads)"
    )
    parser.add_argument(
        "--no-tune-malloc",
        action="store_true",
        help="leave glibc malloc alone (config tune_malloc: false)",
    )
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)

    tic = time.perf_counter()
    graphs, records = make_cohort(
        args.patients, (args.min_nodes, args.max_nodes), args.dim, args.seed
    )
    nodes = [g.x.size(0) for g in graphs.values()]
    gen_s = time.perf_counter() - tic
    load, _ = mapping_source(graphs)
    store = GraphStore(load, cache=True)
    folds = make_folds([r.patient_id for r in records], [r.event for r in records], 5, args.seed)
    fold_of = dict(zip(folds["patient_id"], folds["fold"]))
    train = [r for r in records if fold_of[r.patient_id] != 0]
    test = [r for r in records if fold_of[r.patient_id] == 0]
    data_gb = sum(g.x.numel() * 4 + g.edge_index.numel() * 8 for g in graphs.values()) / 2**30
    print(
        f"{args.patients} patients x 2 modalities, {np.mean(nodes):.0f} nodes per graph "
        f"(range {min(nodes)}-{max(nodes)}), dim {args.dim}, {data_gb:.2f} GB of graphs "
        f"(made in {gen_s:.0f} s); device {device}, {torch.get_num_threads()} threads; "
        f"fold 0: {len(train)} train / {len(test)} test patients"
    )

    rows = []
    for aggregator in args.aggregators.split(","):
        cfg = resolve_training_config(
            {
                "epochs": args.epochs,
                "num_threads": args.threads,
                "tune_malloc": not args.no_tune_malloc,
                "preset": args.preset,
            },
            aggregator=aggregator,
            modalities=["wsi", "ct"],
        )
        out = Path(tempfile.mkdtemp(prefix=f"bench_{aggregator}_"))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        tic, cpu_tic = time.perf_counter(), time.process_time()
        model = fit_fold(
            0,
            train,
            test,
            store,
            cfg,
            in_channels={"wsi": args.dim, "ct": args.dim},
            missing_indicator=False,
            out_dir=out,
            device=device,
            resume=False,
            progress=False,
        )
        fit_s = time.perf_counter() - tic
        fit_cpu_s = time.process_time() - cpu_tic
        log = pd.read_csv(out / "logs" / "fold_0.csv")
        tic = time.perf_counter()
        predict(
            model,
            test,
            store,
            device,
            cfg.batch_size,
            amp=device.type == "cuda",
            num_threads=args.threads,
        )
        infer_s = time.perf_counter() - tic
        tic = time.perf_counter()
        export_fold(model, 0, train, test, store, cfg, out, device)
        export_s = time.perf_counter() - tic
        epoch_s = float(log["seconds"].mean())
        train_s = epoch_s - infer_s  # an epoch = training pass + validation pass
        rows.append(
            {
                "aggregator": aggregator,
                "epoch_s": round(epoch_s, 1),
                "train_graphs_s": round(2 * len(train) / train_s, 1),
                "infer_graphs_s": round(2 * len(test) / infer_s, 1),
                "export_s": round(export_s, 1),
                "fit_s": round(fit_s, 1),
                "fit_cpu_s": round(fit_cpu_s, 1),
                "train_graphs_per_cpu_s": round(2 * len(train) * args.epochs / fit_cpu_s, 1),
                "projected_5x20_min": round(
                    5 * (20 * epoch_s + export_s + (fit_s - epoch_s * args.epochs)) / 60, 1
                ),
                "peak_rss_gb": round(peak_rss_gb(), 2),
                "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if device.type == "cuda"
                else None,
            }
        )
        shutil.rmtree(out, ignore_errors=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
