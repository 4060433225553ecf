"""benchmarks/bench_floor.py records every matrix product of a training step, forward and
backward, and counts their arithmetic exactly (its floor is only as good as that record)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from radiopath.models.propagation import GCNRootConv, gcn_forward

ROOT = Path(__file__).resolve().parents[1]


def _bench_floor():
    spec = importlib.util.spec_from_file_location(
        "bench_floor", ROOT / "benchmarks" / "bench_floor.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorder_counts_forward_and_backward_products_exactly():
    bf = _bench_floor()
    torch.manual_seed(0)
    n, d, h = 50, 8, 16
    x = torch.randn(n, d)  # an input: no gradient, so no product for it in the backward
    lin = torch.nn.Linear(d, h)
    conv = GCNRootConv(h, h)
    ring = torch.arange(n)
    edge_index = torch.cat(
        [torch.stack([ring, (ring + 1) % n]), torch.stack([(ring + 1) % n, ring])], 1
    )
    recorder = bf.ProductRecorder()
    with recorder:
        out = gcn_forward(conv, torch.relu(lin(x)), edge_index)
        out.square().sum().backward()
    sparse = [c for c in recorder.calls if any(s[0] == "sparse" for s in c[1])]
    # the propagation's forward and its backward (the symmetric matrix reused)
    assert len(sparse) == 2
    dense_flops = sum(bf._flops(f, specs) for f, specs, _ in recorder.calls)
    # input projection: forward and weight gradient (N x d x h each); GCN weight and root
    # weight: forward, input gradient and weight gradient (N x h x h each)
    assert dense_flops == 2 * (2 * n * d * h + 2 * 3 * n * h * h)
    dense_s, sparse_s, flops = bf.replay(recorder.calls, repeats=1)
    assert flops == dense_flops and dense_s > 0 and sparse_s > 0


def test_measure_reports_the_floor_below_the_epoch():
    bf = _bench_floor()
    records, store = bf.synthetic_inputs(12, (40, 80), 16, 0)  # bench_training's cohort
    row = bf.measure(records, store, "sparra", "paper", {"batch_size": 4})
    assert 0 < row["products_s"] < row["epoch_s"]
    assert row["floor_graphs_s"] > row["graphs_s"] > 0
    assert np.isclose(row["products_s"], row["dense_s"] + row["sparse_s"])
