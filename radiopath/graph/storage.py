"""Binary graph files: ``torch.save`` of plain tensors and primitives, loaded with
``weights_only=True`` (no pickled code runs on load), written atomically.

Layout (format 1): a dict ``{"format": "radiopath-graph", "version": 1, "tensors": {name:
tensor}, "meta": {"modality", "units", "source", "build_config"}}``. Round trips are exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch_geometric.data import Data

from radiopath.errors import RadiopathInputError
from radiopath.graph.build import SpatialGraph
from radiopath.runkit import torch_save

FORMAT = "radiopath-graph"
VERSION = 1
META_KEYS = ("modality", "units", "source", "build_config")
REQUIRED_TENSORS = ("x", "edge_index")


def _payload(data: Data) -> dict:
    tensors, meta = {}, {}
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
        elif key in META_KEYS:
            meta[key] = value
        else:
            raise RadiopathInputError(
                f"graph attribute {key!r} of type {type(value).__name__} cannot be stored "
                "(only tensors and the attributes " + ", ".join(META_KEYS) + ")",
                field=key,
            )
    return {"format": FORMAT, "version": VERSION, "tensors": tensors, "meta": meta}


def save_graph(path: str | os.PathLike, data: Data) -> Path:
    """Write a graph to ``path`` atomically (temporary file in the same folder + rename).

    Parameters
    ----------
    path
        Destination, conventionally ``*.pt``.
    data
        A graph from :func:`radiopath.graph.build_graph` (any PyG ``Data`` whose attributes
        are tensors or the metadata ``modality``, ``units``, ``source``, ``build_config``).
    """
    path = Path(path)
    payload = _payload(data)
    return torch_save(payload, path)


def _read(path: Path, mmap: bool) -> dict:
    if not path.exists():
        raise RadiopathInputError("graph file does not exist", path=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise RadiopathInputError(f"not a readable graph file ({exc})", path=path) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RadiopathInputError("not a radiopath graph file", path=path)
    if payload.get("version", 0) > VERSION:
        raise RadiopathInputError(
            f"graph file format {payload['version']} is newer than this radiopath reads "
            f"({VERSION}); upgrade radiopath",
            path=path,
        )
    missing = [k for k in REQUIRED_TENSORS if k not in payload.get("tensors", {})]
    if missing:
        raise RadiopathInputError(f"graph file lacks {missing}", path=path, field=missing[0])
    return payload


def load_graph(path: str | os.PathLike) -> Data:
    """Read a graph written by :func:`save_graph` (safe: ``torch.load(weights_only=True)``)."""
    payload = _read(Path(path), mmap=False)
    data = SpatialGraph(**payload["tensors"])
    for key, value in payload["meta"].items():
        data[key] = value
    return data


def read_graph_meta(path: str | os.PathLike) -> dict:
    """The metadata of a graph file plus its node and patch counts, without reading tensors
    into memory (the file is memory-mapped)."""
    payload = _read(Path(path), mmap=True)
    tensors = payload["tensors"]
    meta = dict(payload["meta"])
    meta["n_nodes"] = int(tensors["x"].shape[0])
    meta["n_edges"] = int(tensors["edge_index"].shape[1])
    if "assignment" in tensors:
        meta["n_patches"] = int(tensors["assignment"].shape[0])
    return meta
