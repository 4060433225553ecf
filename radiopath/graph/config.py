"""Graph-construction presets: loading, validation and the keys a graph's hash leaves out.

A preset is a flat mapping (a YAML file in ``radiopath/graph/presets/``, mirrored in the
repository's ``graphs/`` folder, or a user's own YAML file) with the keys of
:data:`DEFAULTS`. Presets are named by file stem (``wsi-clustered``) or given as a path.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from radiopath.config import check_known_keys, load_config_file
from radiopath.config_rules import Either, Flag, Number, OneOf, Text, check_rules
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


_POSITIVE = Number(low=0, low_open=True)
_COUNT = Number(low=1, integer=True)

#: What each key may hold (:mod:`radiopath.config_rules`); ``edge_rule: radius`` needing a
#: radius is checked in :func:`validate_config`.
GRAPH_RULES: dict = {
    "name": Either((Text(), Number())),
    "modality": OneOf((None, "wsi", "ct")),
    "method": OneOf(METHODS),
    "length_unit": OneOf(LENGTH_UNITS),
    "lambda_d": _POSITIVE,
    "lambda_f": Number(low=0),
    "feature_scale": Either((OneOf(("median",)), _POSITIVE)),
    "threshold": _POSITIVE,
    "neighbourhood_radius": _POSITIVE,
    "max_neighbours": _COUNT,
    "edge_rule": OneOf(EDGE_RULES),
    "k": _COUNT,
    "radius": Number(low=0, low_open=True, optional=True),
    "max_edge_length": Number(low=0, low_open=True, optional=True),
    "self_loops": Flag(),
    "seed": Number(low=0, integer=True),
}


def validate_config(cfg: Mapping, path: str | os.PathLike | None = None) -> dict:
    """Check every key and value of a graph configuration; return a clean copy. An error
    names the key (and ``path``, the file the configuration was read from)."""
    cfg = dict(cfg)
    check_known_keys(cfg, DEFAULTS, path=path)
    check_rules(cfg, GRAPH_RULES, path=path)
    if cfg["edge_rule"] == "radius" and cfg["radius"] is None:
        raise RadiopathInputError("edge_rule 'radius' needs a radius", path=path, field="radius")
    cfg["name"] = str(cfg["name"])
    return cfg
