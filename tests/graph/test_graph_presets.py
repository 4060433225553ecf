"""Presets: shipped with the package, mirrored in graphs/, loadable by name or path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from graph_helpers import grid_bag

from radiopath.errors import RadiopathInputError
from radiopath.graph import (
    DEFAULTS,
    MODALITY_DEFAULTS,
    available_presets,
    build_graph,
    load_preset,
)
from radiopath.graph.config import preset_dir

REPO_GRAPHS = Path(__file__).resolve().parents[2] / "graphs"


def test_required_presets_ship_with_the_package():
    assert {"wsi-clustered", "wsi-patch-knn", "ct-clustered-3d"} <= set(available_presets())
    assert MODALITY_DEFAULTS == {"wsi": "wsi-clustered", "ct": "ct-clustered-3d"}


@pytest.mark.parametrize("name", sorted(p.stem for p in preset_dir().glob("*.yaml")))
def test_repository_copy_matches_package_preset(name):
    """graphs/ is the documented place; it must not drift from what installs ship."""
    assert (REPO_GRAPHS / f"{name}.yaml").read_text() == (preset_dir() / f"{name}.yaml").read_text()
    cfg = load_preset(name)
    assert cfg["name"] == name and set(cfg) == set(DEFAULTS)
    # Every key a preset sets is a real option.
    assert set(yaml.safe_load((preset_dir() / f"{name}.yaml").read_text())) <= set(DEFAULTS)


def test_user_yaml_by_path(tmp_path):
    path = tmp_path / "coarse.yaml"
    path.write_text("method: clustered\nthreshold: 0.9\nedge_rule: knn\nk: 4\n")
    cfg = load_preset(path, "ct")
    assert cfg["name"] == "coarse" and cfg["threshold"] == 0.9 and cfg["modality"] is None
    g = build_graph(grid_bag(side=6), path)
    assert g.build_config["edge_rule"] == "knn"
    coarse = g.num_nodes
    assert coarse < build_graph(grid_bag(side=6), path, threshold=0.7).num_nodes


def test_bad_user_yaml_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("threshold: high\n")
    with pytest.raises(RadiopathInputError, match="bad.yaml.*'threshold'"):
        load_preset(path)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(RadiopathInputError, match="missing.yaml.*does not exist"):
        load_preset(missing)


def test_config_hash_tracks_graph_settings_only():
    cfg = load_preset("wsi-clustered")

    def config_hash(c):
        return build_graph(grid_bag(side=4), c).build_config["config_hash"]

    assert config_hash(cfg) == config_hash({**cfg, "name": "renamed"})
    assert config_hash(cfg) != config_hash({**cfg, "threshold": 0.7})


def test_example_graphs_load_and_match_their_embeddings():
    from radiopath.graph import load_graph_manifest, patient_graphs
    from radiopath.io import read_embeddings

    folder = REPO_GRAPHS / "examples" / "graphs"
    manifest = load_graph_manifest(folder)
    assert len(manifest) >= 4 and set(manifest.modality) == {"wsi", "ct"}
    for row in manifest.itertuples():
        (graph,) = patient_graphs(manifest, row.patient_id, row.modality)
        bag = read_embeddings(REPO_GRAPHS / "examples" / row.source)
        assert graph.num_nodes == row.n_nodes and graph.assignment.numel() == bag.num_patches
        means = np.stack(
            [bag.features[graph.assignment.numpy() == k].mean(0) for k in range(graph.num_nodes)]
        )
        np.testing.assert_allclose(graph.x.numpy(), means, rtol=1e-5, atol=1e-6)
