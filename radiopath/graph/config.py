"""Graph-construction presets: loading, validation and the keys a graph's hash leaves out.

A preset is a flat mapping (a YAML file in ``radiopath/graph/presets/``, mirrored in the
repository's ``graphs/`` folder, or a user's own YAML file) with the keys of
:data:`DEFAULTS`. Presets are named by file stem (``wsi-clustered``) or given as a path.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from radiopath.config import check_known_keys, load_config_file
from radiopath.errors import RadiopathInputError

#: Every key a preset may set, with the value used when neither preset nor override sets it.
DEFAULTS: dict[str, object] = {
    "name": "custom",
    "modality": None,
    "method": "clustered",
    "length_unit": "pitch",
    "lambda_d": 0.672,
    "lambda_f": 0.5,
    "feature_scale": "median",
    "threshold": 0.85,
    "neighbourhood_radius": 3.0,
    "max_neighbours": 28,
    "edge_rule": "delaunay",
    "k": 8,
    "radius": None,
    "max_edge_length": 10.0,
    "self_loops": False,
    "seed": 0,
}

#: The preset used for each modality when none is named.
MODALITY_DEFAULTS: dict[str, str] = {"wsi": "wsi-clustered", "ct": "ct-clustered-3d"}

METHODS = ("clustered", "patch")
EDGE_RULES = ("delaunay", "knn", "radius")
LENGTH_UNITS = ("pitch", "physical")
#: Keys that describe a preset but do not change the graph it builds: left out of a graph's
#: ``config_hash`` (``radiopath.runkit.config_fingerprint(cfg, exclude=DESCRIPTIVE_KEYS)``).
DESCRIPTIVE_KEYS = ("name",)


def preset_dir() -> Path:
    """The folder of the presets shipped inside the package."""
    return Path(str(resources.files("radiopath.graph") / "presets"))


def available_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_preset(preset: str | os.PathLike | Mapping | None, modality: str | None = None) -> dict:
    """Resolve a preset into a complete, validated configuration.

    Parameters
    ----------
    preset
        A shipped preset's name (see :func:`available_presets`), a path to a YAML/JSON
        file, a mapping of preset keys, or None for ``modality``'s default
        (:data:`MODALITY_DEFAULTS`).
    modality
        The modality the graph is for; used to pick the default and to check that a
        modality-specific preset is not applied to the other modality.

    Returns
    -------
    dict
        :data:`DEFAULTS` overridden by the preset.
    """
    if preset is None:
        if modality is None:
            raise RadiopathInputError(
                "no preset given and no modality to pick a default for", field="preset"
            )
        preset = MODALITY_DEFAULTS[modality]
    if isinstance(preset, Mapping):
        data = dict(preset)
        source = None
    else:
        path = Path(preset)
        if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
            source = path
        else:
            source = preset_dir() / f"{preset}.yaml"
            if not source.exists():
                raise RadiopathInputError(
                    f"unknown graph preset {str(preset)!r}; shipped presets: "
                    f"{available_presets()} (or give a path to a YAML file)",
                    field="preset",
                )
        data = load_config_file(source)
        data.setdefault("name", source.stem)
    cfg = validate_config({**DEFAULTS, **data}, path=source)
    if modality is not None and cfg["modality"] not in (None, modality):
        raise RadiopathInputError(
            f"preset {cfg['name']!r} is for {cfg['modality']!r} bags, not {modality!r}",
            path=source,
            field="preset",
        )
    return cfg


def merge_overrides(cfg: Mapping, overrides: Mapping) -> dict:
    """``cfg`` with ``overrides`` applied (None values ignored) and validated again."""
    check_known_keys(overrides, DEFAULTS)
    out = copy.deepcopy(dict(cfg))
    out.update({k: v for k, v in overrides.items() if v is not None})
    return validate_config(out)


def _positive(cfg, key, path, allow_none=False, integer=False):
    value = cfg[key]
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or not math.isfinite(value) or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise RadiopathInputError(f"must be {kind}, got {value!r}", path=path, field=key)


def validate_config(cfg: Mapping, path: str | os.PathLike | None = None) -> dict:
    """Check every key and value of a graph configuration; return a clean copy."""
    cfg = dict(cfg)
    check_known_keys(cfg, DEFAULTS, path=path)
    for key, choices in (
        ("method", METHODS),
        ("edge_rule", EDGE_RULES),
        ("length_unit", LENGTH_UNITS),
    ):
        if cfg[key] not in choices:
            raise RadiopathInputError(
                f"must be one of {choices}, got {cfg[key]!r}", path=path, field=key
            )
    if cfg["modality"] not in (None, "wsi", "ct"):
        raise RadiopathInputError(
            f"must be 'wsi', 'ct' or empty, got {cfg['modality']!r}", path=path, field="modality"
        )
    for key in ("lambda_d", "threshold", "neighbourhood_radius"):
        _positive(cfg, key, path)
    if not (isinstance(cfg["lambda_f"], (int, float)) and cfg["lambda_f"] >= 0):
        raise RadiopathInputError(
            f"must be a number >= 0, got {cfg['lambda_f']!r}", path=path, field="lambda_f"
        )
    if cfg["feature_scale"] != "median":
        _positive(cfg, "feature_scale", path)
    _positive(cfg, "max_neighbours", path, integer=True)
    _positive(cfg, "k", path, integer=True)
    _positive(cfg, "radius", path, allow_none=True)
    _positive(cfg, "max_edge_length", path, allow_none=True)
    if cfg["edge_rule"] == "radius" and cfg["radius"] is None:
        raise RadiopathInputError("edge_rule 'radius' needs a radius", path=path, field="radius")
    if not isinstance(cfg["self_loops"], bool):
        raise RadiopathInputError(
            f"must be true or false, got {cfg['self_loops']!r}", path=path, field="self_loops"
        )
    if not isinstance(cfg["seed"], int) or isinstance(cfg["seed"], bool):
        raise RadiopathInputError(
            f"must be an integer, got {cfg['seed']!r}", path=path, field="seed"
        )
    cfg["max_neighbours"] = int(cfg["max_neighbours"])
    cfg["k"] = int(cfg["k"])
    cfg["name"] = str(cfg["name"])
    return cfg
