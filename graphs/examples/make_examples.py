"""Rebuild the tiny example graphs in this folder from a 4-patient synthetic cohort.

    python graphs/examples/make_examples.py

Writes ``cohort/`` (embedding files, cohort.csv, ground truth) and ``graphs/`` (one graph
per file with each modality's default preset, plus ``manifest.csv``). Paths in the manifest
and in the graphs' ``source`` are made relative to this folder so the examples move with the
repository.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from radiopath.datasets import make_synthetic_cohort
from radiopath.graph import build_cohort_graphs, load_graph, save_graph

HERE = Path(__file__).resolve().parent


def main() -> None:
    for sub in ("cohort", "graphs"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    csv = make_synthetic_cohort(
        HERE / "cohort",
        n_patients=4,
        dim=8,
        wsi_patches=(80, 160),
        ct_patches=(40, 90),
        seed=0,
        progress=False,
    )
    manifest = build_cohort_graphs(csv, HERE / "graphs", progress=False)
    manifest["source"] = [os.path.relpath(s, HERE) for s in manifest.source]
    for row in manifest.itertuples():
        graph = load_graph(HERE / "graphs" / row.graph)
        graph.source = row.source
        save_graph(HERE / "graphs" / row.graph, graph)
    manifest.to_csv(HERE / "graphs" / "manifest.csv", index=False)
    (HERE / "graphs" / "failed.csv").unlink(missing_ok=True)
    print(manifest.to_string(index=False))


if __name__ == "__main__":
    main()
