"""Training configuration: a frozen dataclass tree, built from defaults <- preset <- file <- flags.

:class:`TrainingConfig` declares every key once, with its default (the paper's values, Gao et
al. 2025, Sec. 3.1), its rule and its doc (``docs/config-training.md`` is generated from
them). :func:`resolve_training_config` lays the preset named by ``preset``
(:data:`~radiopath.training.presets.PRESETS`; default ``learned``, the recipe that fits on
cohorts of 100-500 patients; ``paper`` adds nothing to the paper's values), then the user's
configuration, then keyword overrides over the defaults; a None value is ignored. A user
configuration that names ``epochs`` and not ``steps`` runs that many epochs whatever the
preset's step count. An unknown key or a wrong value at any depth is refused by its dotted
name (``sparra.alpha0``) before any work starts; :meth:`TrainingConfig.to_dict` gives the
plain dict run records and fingerprints are written from.

    >>> cfg = resolve_training_config({"ratio": 0.3}, aggregator="abmil")
    >>> cfg.ratio.ct, cfg.abmil.hidden_channels, cfg.steps
    (0.3, 64, 400)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from radiopath.config import KeysOf, check_known_keys, config_section, deep_merge
from radiopath.config_rules import Either, Flag, Number, OneOf, Text, check_rules, leaf_keys
from radiopath.errors import RadiopathInputError
from radiopath.models.aggregators import AGGREGATORS
from radiopath.models.encoders import CENTERS, IMPORTANCE_MODES
from radiopath.models.fusion import FUSIONS
from radiopath.models.losses import TIES
from radiopath.models.multimodal import CLINICAL, HEADS
from radiopath.runkit import config_fingerprint
from radiopath.training.presets import PRESETS
from radiopath.training.sections import (
    COUNT,
    FRACTION,
    POSITIVE,
    AbmilConfig,
    ClinicalConfig,
    ConvConfig,
    LateConfig,
    MeanConfig,
    OptimizerConfig,
    PCAConfig,
    PoolingConfig,
    RatioConfig,
    SparraConfig,
    StagedConfig,
    ValidationConfig,
)
from radiopath.typed_config import TypedConfig, generated_page, section, setting

__all__ = [
    "DEFAULT_CONFIG",
    "PRESETS",
    "RUNTIME_KEYS",
    "TrainingConfig",
    "allowed_keys",
    "resolve_training_config",
    "training_horizon",
]

GRAPH_MODALITIES = ("wsi", "ct")
TRAINABLE_MODALITIES = (*GRAPH_MODALITIES, CLINICAL)

RUNTIME = "Runtime (may change on resume): "
"""How the doc of a runtime key starts: a key that does not change what a fold's model
learns (:data:`RUNTIME_KEYS`); runs may differ in them and resume each other."""

_FLAG_OR_AUTO = OneOf(("auto", True, False))


def _aggregator(value) -> str:
    """``aggregator``: one of :data:`~radiopath.models.aggregators.AGGREGATORS`."""
    if not isinstance(value, str) or value not in AGGREGATORS:
        raise RadiopathInputError(
            f"unknown aggregator {value!r}; expected one of {sorted(AGGREGATORS)}",
            field="aggregator",
        )
    return value


def _modalities(value) -> list[str]:
    """``modalities``: a list, or comma-separated text, of trainable modalities, each once."""
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    if not isinstance(value, (list, tuple)):
        raise RadiopathInputError(
            f"must be a list of modalities, got {value!r}", field="modalities"
        )
    mods = list(value)
    if not mods:
        raise RadiopathInputError("no modality given", field="modalities")
    for m in mods:
        if m not in TRAINABLE_MODALITIES:
            raise RadiopathInputError(
                f"modality {m!r} cannot be trained; expected some of {list(TRAINABLE_MODALITIES)}",
                field="modalities",
            )
    if len(set(mods)) != len(mods):
        raise RadiopathInputError(f"modality listed twice: {mods}", field="modalities")
    return mods


@dataclass(frozen=True)
class TrainingConfig(TypedConfig):
    """The training configuration: model, optimisation, fusion, head, runtime, aggregators.

    One section per aggregator (``sparra``, ``abmil``, ``mean``) holds its constructor's
    options; the others mirror the keys' nesting in run records."""

    aggregator: str = setting(
        "sparra",
        doc="The aggregator trained (its options: the section of its name).",
        convert=_aggregator,
        allowed="one of " + ", ".join(repr(a) for a in AGGREGATORS),
    )
    modalities: tuple = setting(
        ["wsi", "ct"],
        doc="Modalities the model reads (clinical: the cohort's clinical columns, an MLP).",
        convert=_modalities,
        allowed="a list (or comma-separated text) of 'wsi', 'ct', 'clinical', each once",
    )
    preset: str = setting(
        "learned",
        OneOf(tuple(PRESETS)),
        "The layer laid over these defaults before the user's keys (radiopath.training.presets).",
    )
    seed: int = setting(0, Number(low=0, integer=True), "Seed of the folds and the models.")
    folds: int = setting(5, Number(low=2, integer=True), "Outer cross-validation folds.")
    ensemble: int = setting(
        1,
        COUNT,
        "Models trained per fold, member i from seed + i (so with its own inner validation "
        "split; member i of seed s is the single model of seed s + i). Their risks are "
        "averaged after standardising each on the training patients, their importance maps "
        "averaged, their vectors exported side by side (radiopath.models.ensemble); k times "
        "the training.",
    )
    epochs: int = setting(20, COUNT, "Epochs to run when steps is null.")
    steps: int | None = setting(
        None,
        Number(low=1, integer=True, optional=True),
        "Optimiser steps to run instead of epochs (null: run epochs); the epochs are then as "
        "many as the steps need at this batch size and training-set size.",
    )
    batch_size: int = setting(32, COUNT, "Patients per batch.")
    lr: float = setting(3e-4, POSITIVE, "Learning rate (cosine-annealed over the epochs).")
    weight_decay: float = setting(1e-5, Number(low=0), "Weight decay.")
    optimizer: OptimizerConfig = section(OptimizerConfig, OptimizerConfig.__doc__)
    dropout: float = setting(0.5, FRACTION, "Dropout of the encoders.")
    hidden: int = setting(128, COUNT, "Hidden width of every branch.")
    conv: ConvConfig = section(ConvConfig, ConvConfig.__doc__)
    ratio: RatioConfig = section(RatioConfig, RatioConfig.__doc__)
    use_graph: bool = setting(
        True, Flag(), "Convolution and pooling on the graph (false: plain MIL over the nodes)."
    )
    center: object = setting(
        False,
        OneOf(CENTERS),
        "Subtract each bag's mean embedding (mean or true) or its column-wise median (median) "
        "from its nodes before the encoder's nonlinearity: a patient-level offset on every "
        "patch (scanner, stain) cannot reach the model.",
    )
    validation: ValidationConfig = section(ValidationConfig, ValidationConfig.__doc__)
    monitor_test: bool = setting(
        False,
        Flag(),
        RUNTIME + "score the outer test fold after every epoch in logs/fold_<k>.csv "
        "(val_c_index; monitoring only, about a sixth of the training time).",
    )
    attention_lr_scale: float = setting(
        1.0,
        POSITIVE,
        "Learning-rate factor of the aggregators' scoring networks (SPARRA's score network, "
        "ABMIL's attention), which decide where the model looks.",
    )
    pooling: PoolingConfig = section(PoolingConfig, PoolingConfig.__doc__)
    importance: str = setting(
        "selection",
        OneOf(IMPORTANCE_MODES),
        RUNTIME + "how node weights are traced back to patches: selection (through the top-k "
        "permutations, dropped nodes 0) or receptive_field (also back through each "
        "convolution's propagation coefficients).",
    )
    embedding_norm: bool = setting(
        True,
        Flag(),
        "Batch-normalise the patient vector before the head (the exported embedding is the "
        "vector before it).",
    )
    fusion: str = setting(
        "concat",
        OneOf((*FUSIONS, "late")),
        "How the modality vectors become one: concat (SPARRA), mean or attention (each "
        "projected to fusion_hidden), or late (one model per modality, risks combined).",
    )
    fusion_hidden: int | None = setting(
        None,
        Number(low=1, integer=True, optional=True),
        "Width of the mean / attention fusion's projections (null: hidden).",
    )
    fusion_lr_scale: float = setting(
        10.0, POSITIVE, "Learning-rate factor of the attention fusion's network."
    )
    late: LateConfig = section(LateConfig, LateConfig.__doc__)
    clinical: ClinicalConfig = section(ClinicalConfig, ClinicalConfig.__doc__)
    modality_dropout: float = setting(
        0.0,
        FRACTION,
        "In training, drop each modality of a patient with this probability (never its last).",
    )
    unimodal_loss: float = setting(
        0.0,
        Number(low=0),
        "Weight of per-modality auxiliary heads (deep supervision; 0: none; ignored with one "
        "modality).",
    )
    staged: StagedConfig = section(StagedConfig, StagedConfig.__doc__)
    head: str = setting(
        "cox",
        OneOf(HEADS),
        "cox, discrete (n_bins hazard logits) or binary (an event by horizon; patients "
        "censored before it left out, positives weighted).",
    )
    horizon: object = setting(
        None,
        Either((Number(low=0, low_open=True, optional=True), Text())),
        "The binary head's horizon: a time in the cohort's unit or text such as 5y / 60m "
        "(read with time_unit); binary head only.",
    )
    time_unit: str = setting("days", OneOf(("days", "months", "years")), "The cohort's time unit.")
    ties: str = setting("efron", OneOf(TIES), "Tie handling of the Cox loss.")
    cox_memory: bool = setting(
        False,
        Flag(),
        "Cox head: risk sets over the whole training fold (other patients' latest risks from "
        "a memory bank) instead of the batch alone.",
    )
    n_bins: int = setting(4, COUNT, "Time bins of the discrete head.")
    standardize: bool = setting(True, Flag(), "Standardise node features on the training fold.")
    pca: PCAConfig = section(PCAConfig, PCAConfig.__doc__)
    missing_indicator: object = setting(
        "auto",
        _FLAG_OR_AUTO,
        "Presence column per modality (auto: when some patient lacks a requested modality).",
    )
    amp: bool = setting(True, Flag(), RUNTIME + "mixed precision (on CUDA only).")
    num_threads: int | None = setting(
        1,
        Number(low=1, integer=True, optional=True),
        RUNTIME + "torch intra-op threads on the CPU while training and predicting (one is "
        "much faster for these small graphs on shared cores; ignored on CUDA / MPS).",
    )
    tune_malloc: bool = setting(
        True,
        Flag(),
        RUNTIME + "on the CPU, let glibc keep freed memory for reuse (process-wide).",
    )
    cache_graphs: object = setting(
        "auto",
        _FLAG_OR_AUTO,
        RUNTIME + "keep graphs in memory (auto: when they fit in cache_limit_gb).",
    )
    cache_limit_gb: float = setting(4.0, POSITIVE, RUNTIME + "memory the graph cache may use.")
    graph_preset: object = setting(
        None,
        doc="Graph presets when the graphs are built in memory (null: each modality's default).",
        allowed="null, or a graph preset (a name, a file, its keys, or one per modality)",
    )
    strict: bool = setting(
        False, Flag(), RUNTIME + "stop at the first unreadable file or missing graph."
    )
    sparra: SparraConfig = section(SparraConfig, SparraConfig.__doc__)
    abmil: AbmilConfig = section(AbmilConfig, AbmilConfig.__doc__)
    mean: MeanConfig = section(MeanConfig, MeanConfig.__doc__)

    def __post_init__(self) -> None:
        _check_fusion(self)
        if self.graph_preset is not None:  # graphs built in memory: each preset's keys
            from radiopath.graph.cohort import resolve_cohort_presets

            with config_section("graph_preset", whole="preset"):
                resolve_cohort_presets(self.graph_preset, list(self.modalities))

    @classmethod
    def known_keys(cls) -> dict:
        """The allowed-keys tree, ``conv`` and ``ratio`` one value or one per graph modality."""
        per_modality = KeysOf(GRAPH_MODALITIES, scalar=True)
        return {**super().known_keys(), "conv": per_modality, "ratio": per_modality}

    def aggregator_options(self) -> dict:
        """The keyword options of the configured aggregator (its section)."""
        return getattr(self, self.aggregator).to_dict()

    def fingerprint(self) -> str:
        """What a fold's model learns from: every key but the runtime ones, hashed
        (:func:`radiopath.runkit.config_fingerprint`)."""
        data = self.to_dict()
        for dotted, neutral in ADDED_LATER.items():
            *sections, key = dotted.split(".")
            where = data
            for name in sections:
                where = where[name]
            if where[key] == neutral:
                del where[key]
        return config_fingerprint(data, exclude=RUNTIME_KEYS)


def _check_fusion(cfg: TrainingConfig) -> None:
    """What the fusion and the binary head need beyond their keys' rules."""
    if cfg.fusion == "late" and len(cfg.modalities) < 2:
        raise RadiopathInputError("late fusion needs at least two modalities", field="fusion")
    if cfg.head != "binary":
        if cfg.horizon is not None:
            raise RadiopathInputError(
                "is read by the binary head only (head: binary)", field="horizon"
            )
        return
    if cfg.horizon is None:
        raise RadiopathInputError(
            "the binary head needs a horizon, e.g. 1826 or '5y'", field="horizon"
        )
    if not training_horizon(cfg) > 0:
        raise RadiopathInputError(f"must be positive, got {cfg.horizon!r}", field="horizon")


DEFAULT_CONFIG: dict = TrainingConfig().to_dict()
"""The defaults as a plain nested dict (read-only use: benchmark defaults, tests)."""

ADDED_LATER: dict[str, object] = {"ensemble": 1, "validation.patience": None}
"""Keys added after runs were made, with the value that changes nothing: at that value a
key is left out of :meth:`TrainingConfig.fingerprint`, so those runs still resume."""

RUNTIME_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(TrainingConfig) if f.metadata.get("doc", "").startswith(RUNTIME)
)
"""Keys that do not change what a fold's model learns (allowed to differ on resume)."""


def allowed_keys() -> dict:
    """The keys a training configuration may set, at every depth (for
    :func:`radiopath.config.check_known_keys`), ``conv`` and ``ratio`` one value or a mapping
    per graph modality; each aggregator's section (``sparra``, ``abmil``, ``mean``) takes its
    own options only."""
    return TrainingConfig.known_keys()


def _without_none(data: Mapping, known: Mapping) -> dict:
    """``data`` less its None values, in its sections at any depth (``known``: the
    allowed-keys tree): a None override is ignored, a leaf's own mapping is kept whole."""
    out = {}
    for key, value in data.items():
        sub = known.get(key)
        if isinstance(value, Mapping) and isinstance(sub, (Mapping, KeysOf)):
            value = _without_none(value, sub if isinstance(sub, Mapping) else {})
        if value is not None:
            out[key] = value
    return out


def _per_modality(data: dict) -> dict:
    """``conv`` and ``ratio`` given as one value: that value for every graph modality."""
    for key in ("ratio", "conv"):
        if key in data and not isinstance(data[key], Mapping):
            data[key] = {m: data[key] for m in GRAPH_MODALITIES}
    return data


def resolve_training_config(
    config: Mapping | TrainingConfig | None = None, **overrides
) -> TrainingConfig:
    """Defaults <- preset <- ``config`` <- ``overrides`` (``None`` values are ignored); a
    built :class:`TrainingConfig` is the base the overrides are laid over.

    Raises
    ------
    RadiopathInputError
        Naming the dotted key of the first unknown key (with the keys allowed there) or
        wrong value (with the values allowed), e.g. ``sparra.alpah0``.
    """
    flags = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(config, TrainingConfig):
        if not flags:
            return config
        flags = _per_modality(_without_none(flags, allowed_keys()))
        return TrainingConfig.from_mapping(flags, base=config)
    user = deep_merge(dict(config or {}), flags)
    check_known_keys(user, allowed_keys())
    check_rules(user, {"preset": OneOf(tuple(PRESETS))})
    user = _per_modality(_without_none(user, allowed_keys()))
    base = TrainingConfig.from_mapping(PRESETS[user.get("preset", DEFAULT_CONFIG["preset"])])
    if user.get("epochs") is not None and user.get("steps") is None:
        base = replace(base, steps=None)  # epochs asked for by name win over a preset's steps
    return TrainingConfig.from_mapping(user, base=base)


def training_horizon(cfg: TrainingConfig) -> float:
    """The binary head's horizon in the cohort's time unit (``horizon`` read in
    ``time_unit``, :func:`radiopath.evaluation.horizon.parse_horizon`)."""
    from radiopath.evaluation.horizon import parse_horizon

    return parse_horizon(cfg.horizon, cfg.time_unit)


def reference_page() -> str:
    """``docs/config-training.md``: every key of :class:`TrainingConfig`, generated from its
    declarations (``tests/training/test_training_config.py`` keeps the page equal)."""
    intro = (
        "The whole of `radiopath train --config` (keys without the `train.` prefix), or the "
        "`train` section of a benchmark or experiment file. Every key is optional; a wrong key "
        "or value is refused by its dotted name before any work starts. The layers: these "
        "defaults (the paper's values), then the preset named by `preset` "
        "(the table below; `radiopath/training/presets.py` gives each choice's reasons), "
        "then the file, then the flags; a null value is ignored, and a file that names "
        "`epochs` but not `steps` runs epochs. Keys marked *Runtime* do not change what a "
        "model learns: a run may be resumed with other values."
    )
    return generated_page(
        TrainingConfig,
        "train",
        title="Training configuration",
        page="docs/config-training.md",
        intro=intro + "\n\n" + _preset_table().rstrip("\n"),
    )


def _preset_table() -> str:
    """The keys each preset sets, as a markdown table."""
    lines = ["## Presets", "", "| preset | sets |", "| --- | --- |"]
    for name, layer in PRESETS.items():
        keys = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in leaf_keys(layer)) or "nothing"
        lines.append(
            f"| `{name}`{' (default)' if name == DEFAULT_CONFIG['preset'] else ''} | {keys} |"
        )
    return "\n".join(lines) + "\n"
