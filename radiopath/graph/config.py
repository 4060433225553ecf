"""Graph-construction presets: :class:`GraphConfig`, a frozen tree of typed keys, and its layers.

A preset is a flat mapping (a YAML file in ``radiopath/graph/presets/``, mirrored in the
repository's ``graphs/`` folder, or a user's own YAML file) of :class:`GraphConfig`'s keys.
Presets are named by file stem (``wsi-clustered``) or given as a path. The layers are
defaults <- preset <- overrides: a preset's ``null`` sets its key to None (``radius: null``),
an override's None leaves the key as the preset has it. ``docs/config-graph.md`` lists every
key, generated from the declarations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from radiopath.config import load_config_file
from radiopath.config_rules import Either, Flag, Number, OneOf, Text
from radiopath.errors import RadiopathInputError
from radiopath.runkit import config_fingerprint
from radiopath.typed_config import TypedConfig, generated_page, setting

#: The preset used for each modality when none is named.
MODALITY_DEFAULTS: dict[str, str] = {"wsi": "wsi-clustered", "ct": "ct-clustered-3d"}

METHODS = ("clustered", "patch")
EDGE_RULES = ("delaunay", "knn", "radius")
LENGTH_UNITS = ("pitch", "physical")
#: Keys that describe a preset but do not change the graph it builds: left out of a graph's
#: ``config_hash`` (:meth:`GraphConfig.fingerprint`).
DESCRIPTIVE_KEYS = ("name",)

_POSITIVE = Number(low=0, low_open=True)
_COUNT = Number(low=1, integer=True)


@dataclass(frozen=True)
class GraphConfig(TypedConfig):
    """How a bag of patch embeddings becomes a graph: nodes (patches or clusters) and edges."""

    name: str = setting(
        "custom",
        Either((Text(), Number())),
        "The preset's name (recorded, not part of the graph's hash).",
        convert=str,
    )
    modality: str | None = setting(
        None, OneOf((None, "wsi", "ct")), "The modality the preset is for (null: any)."
    )
    method: str = setting(
        "clustered", OneOf(METHODS), "clustered: nodes are clusters of patches; patch: every patch."
    )
    length_unit: str = setting(
        "pitch",
        OneOf(LENGTH_UNITS),
        "Unit of the lengths below: the patch pitch (median distance to the nearest other "
        "patch) or the bag's physical units (microns, millimetres).",
    )
    lambda_d: float = setting(
        0.672,
        _POSITIVE,
        "Spatial decay of the similarity exp(-lambda_f df/s_f) exp(-lambda_d dp), per length_unit.",
    )
    lambda_f: float = setting(
        0.5, Number(low=0), "Feature decay of the similarity, per feature scale s_f."
    )
    feature_scale: object = setting(
        "median",
        Either((OneOf(("median",)), _POSITIVE)),
        "s_f: median (the median feature distance between adjacent patches) or a number.",
    )
    threshold: float = setting(
        0.85, _POSITIVE, "Average-linkage cut of d = 1 - similarity (SlideGraph's lambda_h)."
    )
    neighbourhood_radius: float = setting(
        3.0,
        _POSITIVE,
        "Patch pairs farther apart than this (in length_unit) count as fully dissimilar (d = 1).",
    )
    max_neighbours: int = setting(
        28, _COUNT, "Neighbours of each patch on which d is evaluated, at most."
    )
    edge_rule: str = setting(
        "delaunay",
        OneOf(EDGE_RULES),
        "Edges between nodes: Delaunay triangulation, k nearest neighbours (k) or all within "
        "radius (radius).",
    )
    k: int = setting(8, _COUNT, "Neighbours of each node with edge_rule knn.")
    radius: float | None = setting(
        None,
        Number(low=0, low_open=True, optional=True),
        "Longest edge with edge_rule radius, in length_unit (needed there).",
    )
    max_edge_length: float | None = setting(
        10.0,
        Number(low=0, low_open=True, optional=True),
        "Longer edges (in length_unit) are dropped; null: none is.",
    )
    self_loops: bool = setting(False, Flag(), "Add a self-loop to every node.")
    seed: int = setting(
        0, Number(low=0, integer=True), "Breaks ties between equally similar merges."
    )

    def fingerprint(self) -> str:
        """The ``config_hash`` of the graphs built with this configuration: its keys but
        :data:`DESCRIPTIVE_KEYS` (:func:`radiopath.runkit.config_fingerprint`)."""
        return config_fingerprint(self.to_dict(), exclude=DESCRIPTIVE_KEYS)


DEFAULTS: dict = GraphConfig().to_dict()
"""Every key a preset may set, with the value used when neither preset nor override sets it
(a plain dict, for reading)."""


def _with_radius(cfg: GraphConfig, file: str | os.PathLike | None = None) -> GraphConfig:
    """``cfg``, once the check across its keys has passed: ``edge_rule: radius`` needs its
    ``radius``."""
    if cfg.edge_rule == "radius" and cfg.radius is None:
        raise RadiopathInputError("edge_rule 'radius' needs a radius", path=file, field="radius")
    return cfg


def preset_dir() -> Path:
    """The folder of the presets shipped inside the package."""
    return Path(str(resources.files("radiopath.graph") / "presets"))


def available_presets() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_preset(
    preset: str | os.PathLike | Mapping | GraphConfig | None, modality: str | None = None
) -> GraphConfig:
    """Resolve a preset into a complete, validated configuration.

    Parameters
    ----------
    preset
        A shipped preset's name (see :func:`available_presets`), a path to a YAML/JSON
        file, a mapping of preset keys, a built :class:`GraphConfig`, or None for
        ``modality``'s default (:data:`MODALITY_DEFAULTS`).
    modality
        The modality the graph is for; used to pick the default and to check that a
        modality-specific preset is not applied to the other modality.

    Returns
    -------
    GraphConfig
        The defaults overridden by the preset.

    Raises
    ------
    RadiopathInputError
        An unknown preset, or the first unknown key or wrong value, named by its key (and
        the preset's file); a preset for the other modality.
    """
    if preset is None:
        if modality is None:
            raise RadiopathInputError(
                "no preset given and no modality to pick a default for", field="preset"
            )
        preset = MODALITY_DEFAULTS[modality]
    source = None
    if isinstance(preset, GraphConfig):
        cfg = preset
    elif isinstance(preset, Mapping):
        cfg = _with_radius(GraphConfig.from_mapping(preset, null_sets=True))
    else:
        source = _preset_file(preset)
        data = load_config_file(source)
        data.setdefault("name", source.stem)
        cfg = _with_radius(GraphConfig.from_mapping(data, file=source, null_sets=True), source)
    if modality is not None and cfg.modality not in (None, modality):
        raise RadiopathInputError(
            f"preset {cfg.name!r} is for {cfg.modality!r} bags, not {modality!r}",
            path=source,
            field="preset",
        )
    return cfg


def _preset_file(preset: str | os.PathLike) -> Path:
    """The file of a preset given by path or by a shipped preset's name."""
    path = Path(preset)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        return path
    source = preset_dir() / f"{preset}.yaml"
    if not source.exists():
        raise RadiopathInputError(
            f"unknown graph preset {str(preset)!r}; shipped presets: "
            f"{available_presets()} (or give a path to a YAML file)",
            field="preset",
        )
    return source


def merge_overrides(cfg: GraphConfig, overrides: Mapping) -> GraphConfig:
    """``cfg`` with ``overrides`` laid over it (a None value leaves its key as it is), checked."""
    return _with_radius(cfg.with_overrides(overrides))


def reference_page() -> str:
    """``docs/config-graph.md``: every key of :class:`GraphConfig`, generated from its
    declarations (``tests/graph/test_graph_config.py`` keeps the page equal)."""
    return generated_page(
        GraphConfig,
        "",
        title="Graph configuration",
        page="docs/config-graph.md",
        intro=(
            "The keys of a graph preset: a YAML file given to `radiopath graphs --preset "
            "FILE` (or named: the shipped presets in `graphs/`), a mapping given to "
            "`radiopath.graph.build_graph` / `build_cohort_graphs`, the `graph.preset` "
            "section of a benchmark. Every key is optional (a missing one takes the default "
            "below); a wrong key or value is refused by its name before any embedding file "
            "is opened."
        ),
    )
