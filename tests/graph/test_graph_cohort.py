"""Cohort graphs: manifest, resumption, bad files, parallel workers, the command line, the
example graphs shipped in graphs/examples/."""

from __future__ import annotations

import logging
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from config_checks import ROOT

from radiopath.cli import main
from radiopath.errors import RadiopathInputError
from radiopath.graph import (
    build_cohort_graphs,
    build_graph,
    load_graph,
    load_graph_manifest,
    patient_graphs,
)
from radiopath.io import read_cohort, read_embeddings

COLUMNS = ["patient_id", "modality", "source", "graph", "n_patches", "n_nodes", "n_edges"]


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from radiopath.datasets import make_synthetic_cohort

    out = tmp_path_factory.mktemp("graph_cohort")
    return make_synthetic_cohort(
        out, n_patients=5, dim=6, wsi_patches=(60, 120), ct_patches=(40, 80), seed=1, progress=False
    )


@pytest.fixture()
def cohort_copy(tiny_cohort, tmp_path):
    shutil.copytree(tiny_cohort.parent, tmp_path / "cohort")
    return tmp_path / "cohort" / "cohort.csv"


def test_manifest_and_graphs(tiny_cohort, tmp_path):
    cohort = read_cohort(tiny_cohort)
    manifest = build_cohort_graphs(cohort, tmp_path / "g", progress=False)
    assert list(manifest.columns) == COLUMNS
    assert len(manifest) == 10 and set(manifest.modality) == {"wsi", "ct"}
    on_disk = pd.read_csv(tmp_path / "g" / "manifest.csv", dtype={"patient_id": str})
    pd.testing.assert_frame_equal(on_disk, manifest, check_dtype=False)
    for row in manifest.itertuples():
        g = load_graph(tmp_path / "g" / row.graph)
        bag = read_embeddings(row.source)
        assert g.num_nodes == row.n_nodes and g.edge_index.size(1) == row.n_edges
        assert g.assignment.numel() == row.n_patches == bag.num_patches
        assert g.modality == row.modality and g.source == row.source
        # The same graph as building it directly with the modality's default.
        assert torch.equal(g.assignment, build_graph(bag).assignment)
    assert (tmp_path / "g" / "failed.csv").exists() and manifest.attrs["failed"].empty


def test_patient_graphs_and_manifest_loading(tiny_cohort, tmp_path):
    built = build_cohort_graphs(tiny_cohort, tmp_path / "g", progress=False)
    loaded = load_graph_manifest(tmp_path / "g")
    assert loaded["path"].map(lambda p: p.startswith(str(tmp_path))).all()
    pid = built.patient_id.iloc[0]
    for source in (tmp_path / "g", loaded, built):
        graphs = patient_graphs(source, pid, "ct")
        assert len(graphs) == 1 and graphs[0].modality == "ct" and graphs[0].pos.shape[1] == 3
    assert patient_graphs(loaded, "nobody", "wsi") == []
    with pytest.raises(RadiopathInputError, match="no graph manifest"):
        load_graph_manifest(tmp_path / "empty")


def test_resume_skips_built_graphs_and_rebuilds_changed_ones(tiny_cohort, tmp_path, caplog):
    out = tmp_path / "g"
    first = build_cohort_graphs(tiny_cohort, out, progress=False)
    stamps = {g: (out / g).stat().st_mtime_ns for g in first.graph}
    with caplog.at_level(logging.INFO, logger="radiopath.graph"):
        again = build_cohort_graphs(tiny_cohort, out, progress=False)
    assert "10 graph(s) already built" in caplog.text
    assert {g: (out / g).stat().st_mtime_ns for g in again.graph} == stamps
    pd.testing.assert_frame_equal(first, again)
    # Another preset for WSI: only the WSI graphs are rebuilt.
    build_cohort_graphs(tiny_cohort, out, preset="wsi-patch-knn", progress=False)
    changed = {g for g in first.graph if (out / g).stat().st_mtime_ns != stamps[g]}
    assert changed == set(first.graph[first.modality == "wsi"])
    assert load_graph(out / sorted(changed)[0]).build_config["name"] == "wsi-patch-knn"


def test_bad_file_is_reported_and_skipped(cohort_copy, tmp_path, caplog):
    cohort = read_cohort(cohort_copy)
    victim = cohort.patients[1].files["wsi"][0]
    with h5py.File(victim, "r+") as fh:
        fh["features"][0, 0] = np.nan
    with caplog.at_level(logging.WARNING, logger="radiopath.graph"):
        manifest = build_cohort_graphs(cohort, tmp_path / "g", progress=False)
    assert len(manifest) == 9 and str(victim.resolve()) not in set(manifest.source)
    failed = pd.read_csv(tmp_path / "g" / "failed.csv")
    assert len(failed) == 1 and "NaN or inf" in failed.error[0]
    assert cohort.patients[1].patient_id in caplog.text and victim.name in caplog.text
    with pytest.raises(RadiopathInputError, match=f"{victim.name}.*NaN or inf"):
        build_cohort_graphs(cohort, tmp_path / "g2", strict=True, progress=False)


def _rewrite_width(path, width):
    with h5py.File(path, "r+") as fh:
        feats = fh["features"][()]
        del fh["features"]
        fh["features"] = np.random.default_rng(0).normal(size=(len(feats), width)).astype("f4")


def test_embedding_width_differing_from_the_cohort(cohort_copy, tmp_path):
    cohort = read_cohort(cohort_copy, check_files=False)  # our own width check must catch it
    odd = cohort.patients[2].files["ct"][0]
    _rewrite_width(odd, 11)
    manifest = build_cohort_graphs(cohort, tmp_path / "g", progress=False)
    failed = manifest.attrs["failed"]
    assert list(failed.source) == [str(odd.resolve())]
    assert "width 11 differs from the 6 of the other 4 ct file(s)" in failed.error[0]
    assert len(manifest) == 9
    with pytest.raises(RadiopathInputError, match=f"{cohort.patients[2].patient_id}.*width 11"):
        build_cohort_graphs(cohort, tmp_path / "g2", strict=True, progress=False)
    # read_cohort's own check reports it too; it is listed as failed, not silently dropped.
    checked = read_cohort(cohort_copy)
    manifest = build_cohort_graphs(checked, tmp_path / "g3", progress=False)
    assert len(manifest.attrs["failed"]) == 1 and len(manifest) == 9


def test_presets_per_modality(tiny_cohort, tmp_path):
    manifest = build_cohort_graphs(
        tiny_cohort,
        tmp_path / "g",
        preset={"wsi": "wsi-patch-knn", "ct": "ct-patch-knn"},
        progress=False,
        modalities=["wsi", "ct"],
    )
    assert (manifest.n_nodes == manifest.n_patches).all()
    only_ct = build_cohort_graphs(tiny_cohort, tmp_path / "h", modalities=["ct"], progress=False)
    assert set(only_ct.modality) == {"ct"}
    with pytest.raises(RadiopathInputError, match="two presets given for modality 'wsi'"):
        build_cohort_graphs(tiny_cohort, tmp_path / "i", preset=["wsi-patch-knn", "wsi-clustered"])


@pytest.mark.slow
def test_parallel_workers_build_the_same_graphs(tiny_cohort, tmp_path):
    serial = build_cohort_graphs(tiny_cohort, tmp_path / "a", progress=False)
    parallel = build_cohort_graphs(tiny_cohort, tmp_path / "b", workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    for g in serial.graph:
        a, b = load_graph(tmp_path / "a" / g), load_graph(tmp_path / "b" / g)
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_index, b.edge_index)


def test_command_line(tiny_cohort, tmp_path):
    runner = CliRunner()
    out = tmp_path / "g"
    result = runner.invoke(
        main,
        [
            "graphs",
            "--cohort",
            str(tiny_cohort),
            "--out",
            str(out),
            "--preset",
            "wsi-patch-knn",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wsi: 5 graph(s)" in result.output and (out / "manifest.csv").exists()
    manifest = load_graph_manifest(out)
    wsi = manifest[manifest.modality == "wsi"]
    assert (wsi.n_nodes == wsi.n_patches).all()
    bad = runner.invoke(
        main,
        ["graphs", "--cohort", str(tiny_cohort), "--out", str(out), "--preset", "no-such-preset"],
    )
    assert bad.exit_code == 2 and "unknown graph preset 'no-such-preset'" in bad.output


def test_example_graphs_load_and_match_their_embeddings():
    """The tiny graphs of graphs/examples/ load through their manifest and still match the
    embeddings they were built from."""
    folder = ROOT / "graphs" / "examples" / "graphs"
    manifest = load_graph_manifest(folder)
    assert len(manifest) >= 4 and set(manifest.modality) == {"wsi", "ct"}
    for row in manifest.itertuples():
        (graph,) = patient_graphs(manifest, row.patient_id, row.modality)
        bag = read_embeddings(ROOT / "graphs" / "examples" / row.source)
        assert graph.num_nodes == row.n_nodes and graph.assignment.numel() == bag.num_patches
        means = np.stack(
            [bag.features[graph.assignment.numpy() == k].mean(0) for k in range(graph.num_nodes)]
        )
        np.testing.assert_allclose(graph.x.numpy(), means, rtol=1e-5, atol=1e-6)
