"""The arithmetic floor of a training workload: how long its matrix products alone take here.

Trains epochs of one fold's model as the training loop does (``_train_epoch``: collation,
modality dropout, forward, backward, optimiser step) and records every matrix product it
runs, forward and backward (a ``TorchDispatchMode`` sees each ``mm``, ``addmm``, ``bmm``
and sparse ``addmm`` with its operands' shapes, strides and types). It then replays the
recorded products alone, on fresh operands of the same shapes and layouts (the sparse ones
on the recorded matrices), and times them. That time is what an epoch would take if
everything else (element-wise work, top-k sorts, indexing, allocation, the optimiser, Python)
cost nothing, at the arithmetic the configuration asks for (float32 on the CPU): no
overhead removal can take a workload below it, only less arithmetic or a faster machine.

Epochs are counted in training steps only (no inner-validation passes, which add forward
products), so the floor is an underestimate.

    # the throughput issue's workload: paper preset, 5 folds x 20 epochs, two workers
    python benchmarks/bench_pipeline.py --out /tmp/pipe --aggregators sparra \\
        --train '{"preset": "paper"}' --workers 2          # writes the cohort and graphs
    python benchmarks/bench_floor.py --pipeline /tmp/pipe --preset paper \\
        --units 5 --epochs-per-unit 20 --workers 2 --target 60
    # the default recipe: 3 aggregators x 5 folds x 3 members, as many epochs as ran
    python benchmarks/bench_floor.py --pipeline /tmp/pipe --preset learned \\
        --aggregators sparra,abmil,mean --units 15 --epochs-per-unit 30 --workers 2
    # bench_training.py's synthetic graphs (1k-10k nodes, 256-d), graphs per second
    python benchmarks/bench_floor.py --synthetic --preset paper --patients 80

Columns: ``epoch_s`` one measured training epoch (after a warm-up epoch), ``products_s``
the same epoch's products replayed alone (``dense_s`` and ``sparse_s`` of it), ``share``
products over epoch, ``gflops`` the dense products' rate, ``graphs_s`` and
``floor_graphs_s`` training graphs per second measured and at the floor (each training
patient's graphs, as ``bench_training.py`` counts them, also where modality dropout
leaves some out of a step), and with
``--units``: ``workload_s`` the workload projected from the measured epoch and
``floor_s`` from the products alone (``units x epochs-per-unit x seconds / workers``, perfect
parallelism: a lower bound).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from radiopath.training.config import resolve_training_config
from radiopath.training.data import (
    GraphStore,
    MappedGraphStore,
    PatientRecord,
    manifest_source,
    mapping_source,
)
from radiopath.training.loop import _start_fold, _train_epoch, schedule_epochs
from radiopath.training.memory import tune_cpu_malloc
from radiopath.training.validation import validation_split

_aten = torch.ops.aten
PRODUCTS = {
    _aten.mm.default,
    _aten.addmm.default,
    _aten.bmm.default,
    _aten.baddbmm.default,
    _aten._sparse_addmm.default,
}


class ProductRecorder(TorchDispatchMode):
    """Records each matrix product: ``(op, args, kwargs)`` with every dense tensor replaced
    by its ``(size, stride, dtype)`` and every sparse tensor kept as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS:
            self.calls.append((func, [_spec(a) for a in args], dict(kwargs)))
        return func(*args, **kwargs)


def _spec(value):
    if isinstance(value, torch.Tensor):
        if value.layout == torch.strided:
            return ("dense", tuple(value.shape), tuple(value.stride()), value.dtype)
        return ("sparse", value.detach())
    return ("value", value)


def _operand(spec):
    if spec[0] == "dense":
        _, size, stride, dtype = spec
        # any finite values do: a dense product's time does not depend on them (random
        # numbers cost more to draw than the product takes)
        return torch.empty_strided(size, stride, dtype=dtype).fill_(0.5)
    return spec[1]


def _sparse(specs) -> bool:
    return any(s[0] == "sparse" for s in specs)


def _flops(func, specs) -> float:
    """Dense multiply-adds x 2 of one product (0 for a sparse one)."""
    if _sparse(specs):
        return 0.0
    dense = [s[1] for s in specs if s[0] == "dense"]
    a, b = dense[-2], dense[-1]  # addmm/baddbmm: (input, mat1, mat2)
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def replay(calls, repeats: int = 3) -> tuple[float, float, float]:
    """``(dense seconds, sparse seconds, dense flops)`` of the recorded products, each
    replayed on fresh operands made just before it (untimed; they are then as warm in the
    caches as the training step's own, which it had just written); the fastest of
    ``repeats`` passes."""
    best = (np.inf, np.inf)
    for _ in range(repeats):
        dense = sparse = 0.0
        for func, specs, kwargs in calls:
            args = [_operand(s) for s in specs]
            tic = time.perf_counter()
            func(*args, **kwargs)
            elapsed = time.perf_counter() - tic
            if _sparse(specs):
                sparse += elapsed
            else:
                dense += elapsed
        if dense + sparse < sum(best):
            best = (dense, sparse)
    return best[0], best[1], sum(_flops(f, specs) for f, specs, _ in calls)


def pipeline_inputs(folder: Path):
    """The patients and graph store of a ``bench_pipeline.py --out`` folder."""
    cohort = pd.read_csv(folder / "cohort" / "cohort.csv")
    graphs = folder / "run" / "graphs"
    manifest = pd.read_csv(graphs / "manifest.csv")
    modalities: dict[str, set] = {}
    for pid, m in zip(manifest["patient_id"].astype(str), manifest["modality"]):
        modalities.setdefault(pid, set()).add(m)
    records = [
        PatientRecord(str(r.patient_id), float(r.time), int(r.event), tuple(sorted(mods)))
        for r in cohort.itertuples()
        if (mods := modalities.get(str(r.patient_id)))
    ]
    return records, GraphStore(manifest_source(graphs)[0], cache=True)


def synthetic_inputs(patients: int, nodes: tuple[int, int], dim: int, seed: int):
    """``bench_training.py``'s cohort (:func:`bench_training.make_cohort`): 1k-10k nodes,
    about 6 neighbours, ``dim``-d."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_training import make_cohort

    graphs, records = make_cohort(patients, nodes, dim, seed)
    return records, GraphStore(mapping_source(graphs)[0], cache=True)


def measure(records, store, aggregator: str, preset: str, train_config: dict) -> dict:
    """One fold (the first 80% of the patients) of ``aggregator``: a warm-up epoch, a timed
    epoch, then a recorded epoch whose products are replayed."""
    cfg = resolve_training_config({"preset": preset, "aggregator": aggregator, **train_config})
    train = records[: int(0.8 * len(records))]
    seed = int(cfg.seed) * 1000
    torch.manual_seed(seed)
    train, _ = validation_split(train, float(cfg.validation.fraction), seed)
    modalities = sorted({m for r in records for m in r.modalities})
    widths = {m: store.feature_width(records[0].patient_id, m) for m in modalities}
    if cfg.tune_malloc:  # as fit_fold does on the CPU
        tune_cpu_malloc()
    n_epochs = schedule_epochs(cfg, len(train))
    run = _start_fold(0, cfg, train, store, widths, False, torch.device("cpu"), n_epochs, True)
    run.n_epochs = n_epochs
    mapped = run.model.input_components is not None  # as the training loop does
    fold_store = MappedGraphStore(store, run.model) if mapped else store
    graphs = sum(len(r.modalities) for r in train)
    _train_epoch(run, train, fold_store, 0, seed)  # warm-up: first touch of the memory
    tic = time.perf_counter()
    _train_epoch(run, train, fold_store, 1, seed)
    epoch = time.perf_counter() - tic
    recorder = ProductRecorder()
    with recorder:  # the timed epoch's batches again (each epoch's order is seeded by its
        # index), so the same graphs and, top-k keeping a fixed share, the same shapes
        _train_epoch(run, train, fold_store, 1, seed)
    dense, sparse, flops = replay(recorder.calls)
    products = dense + sparse
    return {
        "aggregator": aggregator,
        "epoch_s": epoch,
        "products_s": products,
        "dense_s": dense,
        "sparse_s": sparse,
        "share": products / epoch,
        "gflops": flops / dense / 1e9,
        "graphs_s": graphs / epoch,
        "floor_graphs_s": graphs / products,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pipeline", type=Path, help="a bench_pipeline.py --out folder")
    source.add_argument("--synthetic", action="store_true", help="bench_training.py's graphs")
    parser.add_argument("--patients", type=int, default=205, help="with --synthetic")
    parser.add_argument(
        "--nodes", type=int, nargs=2, default=(1000, 10000), help="with --synthetic"
    )
    parser.add_argument("--dim", type=int, default=256, help="with --synthetic")
    parser.add_argument("--preset", default="learned")
    parser.add_argument("--aggregators", default="sparra")
    parser.add_argument("--train", default="{}", help="more training configuration, JSON")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--units", type=int, default=0, help="units per aggregator")
    parser.add_argument("--epochs-per-unit", type=float, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--target", type=float, default=None, help="the workload's target, s")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.pipeline:
        records, store = pipeline_inputs(args.pipeline)
    else:
        records, store = synthetic_inputs(args.patients, tuple(args.nodes), args.dim, 0)
    train_config = json.loads(args.train)
    if args.preset == "learned":
        train_config.setdefault("ensemble", 1)  # one member: a unit is one model
    rows = [
        measure(records, store, a, args.preset, train_config) for a in args.aggregators.split(",")
    ]
    table = pd.DataFrame(rows)
    if args.units:
        scale = args.units * args.epochs_per_unit / args.workers
        table["workload_s"] = table["epoch_s"] * scale
        table["floor_s"] = table["products_s"] * scale
    print(
        f"{len(records)} patients, preset {args.preset}, {torch.get_num_threads()} "
        f"thread(s), torch {torch.__version__}"
    )
    print(table.round(3).to_string(index=False))
    if args.units:
        print(
            f"workload ({args.units} units x {args.epochs_per_unit:g} epochs per aggregator "
            f"on {args.workers} worker(s)): measured {table['workload_s'].sum():.0f} s, "
            f"products alone {table['floor_s'].sum():.0f} s"
            + (f", target {args.target:g} s" if args.target else "")
        )


if __name__ == "__main__":
    main()
