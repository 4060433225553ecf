"""Graph construction: speed, peak memory and fidelity against TIAToolbox's SlideGraph.

Every measurement runs in its own subprocess, so peak resident memory (``ru_maxrss``) of one
size does not leak into the next; the figure includes the input arrays (as SlideGraph's
does) and the Python/torch runtime. Inputs follow ``shared/anchors/slidegraph.py``: patches
on a square grid with a 224-pixel pitch and standard-normal 1024-d features; the 3-D case
is a cubic grid of CT patches (8 voxels, spacing 0.8 x 0.8 x 2.5 mm, and isotropic 1 mm).

Fidelity (2k-5k patches) compares the patch-to-node assignment with SlideGraph's (adjusted
Rand index) and reports the within-node feature variance (share of the total variance left
inside nodes; lower = more homogeneous nodes), on the random features and on *tissue*
features (six Voronoi regions with their own mean, as in the synthetic cohort), for the
SlideGraph-compatible preset (``wsi-slidegraph``) and the default (``wsi-clustered``).

The baseline is loaded by ``slidegraph.py`` in the ``--anchors`` folder (it downloads the
TIAToolbox wheel once); radiopath itself never depends on it.

    python benchmarks/bench_graphs.py                     # everything (SlideGraph 10k: ~1 min)
    python benchmarks/bench_graphs.py --quick             # small sizes only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_ANCHORS = HERE.parent.parent / "shared" / "anchors"


def grid_points(n: int, ndim: int) -> np.ndarray:
    side = int(np.ceil(n ** (1.0 / ndim)))
    axes = [np.arange(side)] * ndim
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, ndim)[:n]


def make_features(n: int, dim: int, kind: str, cells: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, dim), dtype=np.float32)
    if kind == "tissue":
        from scipy.spatial import cKDTree

        seeds = cells[rng.choice(n, size=6, replace=False)]
        _, region = cKDTree(seeds).query(cells)
        means = rng.standard_normal((6, dim)).astype(np.float32)
        features += 1.5 * means[region]
    return features


def worker(args: argparse.Namespace) -> None:
    """One measurement; prints a JSON line and saves the assignment when asked."""
    import resource

    ndim = 3 if args.method.startswith("ct") else 2
    cells = grid_points(args.n, ndim)
    features = make_features(args.n, args.dim, args.features, cells)
    if args.method == "slidegraph":
        import types

        sys.path.insert(0, str(args.anchors))
        from scipy.cluster import hierarchy
        from slidegraph import SlideGraphConstructor

        captured = {}

        def fcluster(*a, **kw):
            captured["labels"] = hierarchy.fcluster(*a, **kw)
            return captured["labels"]

        # Capture SlideGraph's flat clusters (it returns only node features and edges).
        SlideGraphConstructor.build.__globals__["hierarchy"] = types.SimpleNamespace(
            linkage=hierarchy.linkage, fcluster=fcluster
        )
        start = time.perf_counter()
        graph = SlideGraphConstructor.build(cells * 224.0, features)
        seconds = time.perf_counter() - start
        labels = np.unique(captured["labels"], return_inverse=True)[1]
        n_nodes, n_edges = len(graph["x"]), graph["edge_index"].shape[1]
    else:
        from radiopath.graph import build_graph
        from radiopath.io import EmbeddingBag

        if ndim == 2:
            bag = EmbeddingBag(features=features, coords=cells * 224, modality="wsi")
            preset = args.method
        else:
            spacing = (1.0, 1.0, 1.0) if args.method == "ct-iso" else (0.8, 0.8, 2.5)
            bag = EmbeddingBag(
                features=features, coords=cells * 8, modality="ct", patch_size=8, spacing=spacing
            )
            preset = "ct-clustered-3d"
        start = time.perf_counter()
        graph = build_graph(bag, preset)
        seconds = time.perf_counter() - start
        labels = graph.assignment.numpy()
        n_nodes, n_edges = graph.num_nodes, graph.edge_index.size(1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    if args.save:
        np.save(args.save, labels)
    print(
        json.dumps(
            {"seconds": seconds, "peak_gib": peak, "nodes": int(n_nodes), "edges": int(n_edges)}
        )
    )


def run(
    method: str,
    n: int,
    dim: int,
    anchors: Path,
    features: str = "random",
    save: Path | None = None,
    timeout: float = 900,
) -> dict | None:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        str(n),
        "--dim",
        str(dim),
        "--anchors",
        str(anchors),
        "--features",
        features,
    ]
    if save is not None:
        cmd += ["--save", str(save)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def within_node_variance(features: np.ndarray, labels: np.ndarray) -> float:
    """Share of the total feature variance left within nodes (0 = nodes are homogeneous)."""
    counts = np.bincount(labels)
    means = np.zeros((len(counts), features.shape[1]))
    np.add.at(means, labels, features)
    means /= counts[:, None]
    within = ((features - means[labels]) ** 2).sum()
    total = ((features - features.mean(0)) ** 2).sum()
    return float(within / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--anchors",
        type=Path,
        default=DEFAULT_ANCHORS,
        help="folder with slidegraph.py (default: ../shared/anchors)",
    )
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--no-slidegraph", action="store_true", help="skip the baseline")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--features", default="random", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.method, args.n = args.worker[0], int(args.worker[1])
        worker(args)
        return

    import tempfile

    sg_sizes = [2000, 5000] if args.quick else [2000, 5000, 10000]
    ours_sizes = [2000, 5000, 10000] if args.quick else [2000, 5000, 10000, 50000, 100000]
    use_sg = not args.no_slidegraph
    print(
        f"# graph construction, {args.dim}-d features, {os.cpu_count()} cores "
        "(shared machine: timings are noisy)\n"
    )
    print("## Speed and peak memory (each row its own process)\n")
    print(
        "| method | patches | nodes | edges | seconds | peak RSS GiB | speed-up vs SlideGraph "
        "| memory vs SlideGraph |"
    )
    print("|---|---|---|---|---|---|---|---|")
    baseline: dict[int, dict] = {}
    if use_sg:
        for n in sg_sizes:
            res = run("slidegraph", n, args.dim, args.anchors)
            if res is None:
                print(f"| SlideGraph | {n} | - | - | failed | - | | |")
                continue
            baseline[n] = res
            print(
                f"| SlideGraph | {n} | {res['nodes']} | {res['edges']} | {res['seconds']:.2f} "
                f"| {res['peak_gib']:.2f} | 1 | 1 |"
            )
    rows = [("wsi-clustered", n) for n in ours_sizes] + [("wsi-patch-knn", ours_sizes[-1])]
    rows += [
        ("ct", 50000 if not args.quick else 10000),
        ("ct-iso", 50000 if not args.quick else 10000),
    ]
    labels = {"ct": "ct-clustered-3d (0.8x0.8x2.5 mm)", "ct-iso": "ct-clustered-3d (1 mm iso)"}
    for method, n in rows:
        res = run(method, n, args.dim, args.anchors)
        if res is None:
            print(f"| {labels.get(method, method)} | {n} | - | - | failed | - | | |")
            continue
        base = baseline.get(n) if method == "wsi-clustered" else None
        speed = f"{base['seconds'] / res['seconds']:.0f}x" if base else ""
        memory = f"{res['peak_gib'] / base['peak_gib']:.2f}" if base else ""
        print(
            f"| {labels.get(method, method)} | {n} | {res['nodes']} | {res['edges']} "
            f"| {res['seconds']:.2f} | {res['peak_gib']:.2f} | {speed} | {memory} |"
        )

    if not use_sg:
        return
    print("\n## Fidelity against SlideGraph (same patches and features)\n")
    print("| features | patches | method | nodes | ARI vs SlideGraph | within-node variance |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("random", "tissue"):
            for n in (2000, 5000):
                cells = grid_points(n, 2)
                feats = make_features(n, args.dim, kind, cells)
                ref_path = Path(tmp) / f"sg-{kind}-{n}.npy"
                ref = run("slidegraph", n, args.dim, args.anchors, kind, ref_path)
                if ref is None:
                    continue
                sg_labels = np.load(ref_path)
                print(
                    f"| {kind} | {n} | SlideGraph | {ref['nodes']} | 1 "
                    f"| {within_node_variance(feats, sg_labels):.3f} |"
                )
                for method in ("wsi-slidegraph", "wsi-clustered"):
                    path = Path(tmp) / f"{method}-{kind}-{n}.npy"
                    res = run(method, n, args.dim, args.anchors, kind, path)
                    if res is None:
                        continue
                    ours = np.load(path)
                    from sklearn.metrics import adjusted_rand_score

                    print(
                        f"| {kind} | {n} | {method} | {res['nodes']} "
                        f"| {adjusted_rand_score(sg_labels, ours):.3f} "
                        f"| {within_node_variance(feats, ours):.3f} |"
                    )


if __name__ == "__main__":
    main()
