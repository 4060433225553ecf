"""Binary graph files: exact round trips, safe loading, atomic writes."""

from __future__ import annotations

import zipfile

import pytest
import torch
from graph_helpers import grid_bag

from radiopath.errors import RadiopathInputError
from radiopath.graph import build_graph, load_graph, read_graph_meta, save_graph


@pytest.mark.parametrize("modality,preset", [("wsi", "wsi-clustered"), ("ct", "ct-patch-knn")])
def test_round_trip_is_exact(tmp_path, modality, preset):
    g = build_graph(grid_bag(side=6, modality=modality, path=tmp_path / "in.h5"), preset)
    path = save_graph(tmp_path / "g.pt", g)
    back = load_graph(path)
    assert set(back.keys()) == set(g.keys())
    for key, value in g.items():
        if isinstance(value, torch.Tensor):
            assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
        else:
            assert back[key] == value, key
    assert back.source.endswith("in.h5") and back.build_config["resolved"]["pitch"] > 0


def test_file_is_binary_and_loads_with_weights_only(tmp_path):
    g = build_graph(grid_bag(side=5))
    path = save_graph(tmp_path / "g.pt", g)
    assert zipfile.is_zipfile(path)  # torch's zip container, not JSON text
    payload = torch.load(path, weights_only=True)
    assert torch.equal(payload["tensors"]["x"], g.x)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    meta = read_graph_meta(path)
    assert meta["n_nodes"] == g.num_nodes and meta["n_patches"] == 25
    assert meta["modality"] == "wsi"


def test_bad_files_are_named(tmp_path):
    with pytest.raises(RadiopathInputError, match="does not exist"):
        load_graph(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a graph")
    with pytest.raises(RadiopathInputError, match="junk.pt.*not a readable graph file"):
        load_graph(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(RadiopathInputError, match="not a radiopath graph file"):
        load_graph(other)


def test_unstorable_attribute_is_refused(tmp_path):
    g = build_graph(grid_bag(side=4))
    g.callback = print
    with pytest.raises(RadiopathInputError, match="callback"):
        save_graph(tmp_path / "g.pt", g)
