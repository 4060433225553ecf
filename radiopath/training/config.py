"""Training configuration: the paper's defaults, the reference code's preset, validation.

Layers, each overriding the one before: :data:`DEFAULT_CONFIG` (the paper's values, Gao et
al. 2025, Sec. 3.1) <- the preset named by ``preset`` (:data:`PRESETS`; default ``learned``,
the recipe that fits on cohorts of 100-500 patients; ``paper`` adds nothing to the paper's
values) <- the user's config. A user config that names ``epochs`` and not ``steps`` runs
that many epochs whatever the preset's step count.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from radiopath.config import KeysOf, check_known_keys, config_section, deep_merge
from radiopath.config_rules import Either, Flag, ListOf, Number, OneOf, Text, check_rules
from radiopath.errors import RadiopathInputError
from radiopath.models.aggregators import AGGREGATORS, KL_VARIANTS, RECONSTRUCTIONS
from radiopath.models.encoders import CENTERS, CONVS, DROPOUT_POSITIONS, IMPORTANCE_MODES
from radiopath.models.fusion import FUSIONS
from radiopath.models.losses import TIES
from radiopath.models.multimodal import CLINICAL, HEADS

GRAPH_MODALITIES = ("wsi", "ct")
TRAINABLE_MODALITIES = (*GRAPH_MODALITIES, CLINICAL)
LATE_WEIGHTS = ("equal", "c_index", "cox")
VALIDATION_METRICS = ("c_index", "loss")

DEFAULT_CONFIG: dict = {
    "aggregator": "sparra",
    "modalities": ["wsi", "ct"],
    "preset": "learned",
    "seed": 0,
    "n_folds": 5,
    "epochs": 20,
    # Optimiser steps to run instead of ``epochs`` (null: run ``epochs``); the epochs are
    # then as many as the steps need at this batch size and training-set size.
    "steps": None,
    "batch_size": 32,
    "lr": 3e-4,
    "weight_decay": 1e-5,
    # "adam" (the paper) or "sgd" with this momentum (MMDLM: SGD, lr 0.004, momentum 0.9)
    "optimizer": {"name": "adam", "momentum": 0.9},
    "dropout": 0.5,
    "hidden": 128,
    "conv": {"wsi": "gcn", "ct": "gcn"},
    "ratio": {"wsi": 0.2, "ct": 0.2},
    "use_graph": True,
    # Subtract each bag's mean embedding ("mean" or true) or its column-wise median
    # ("median") from its nodes before the encoder's nonlinearity: a patient-level offset on
    # every patch (scanner, stain) cannot reach the model. The median is barely moved by a
    # small region, so the other nodes do not carry a share of the region's shift.
    "center": False,
    # Model selection on an inner validation split of the training fold (never the test
    # fold): the fraction held out (0: none, the last epoch is kept), the criterion
    # ("c_index" or "loss", the Cox partial likelihood) and the first fraction of the
    # schedule whose epochs are not eligible.
    "validation": {"fraction": 0.0, "metric": "c_index", "start": 0.0},
    # Score the outer test fold after every epoch in logs/fold_<k>.csv (``val_c_index``;
    # monitoring only, never used to choose anything). Off by default: a forward pass over
    # the test fold every epoch costs about a sixth of the training time (measured:
    # 0.17-0.26 of an epoch's steps on the 205-patient cohort).
    "monitor_test": False,
    # Top-k pooling (GraphEncoder): gate nonlinearity and multiplier of PyG's TopKPooling,
    # where the dropout acts ("input": after the input projection, before the selection
    # scores; "pooled": on the surviving nodes; the paper does not say), the learning-rate
    # factor of the pooling projections and the Gumbel noise scale of the top-k scores in
    # training (0: PyG's deterministic top-k).
    # learning-rate factor of the aggregators' scoring networks (SPARRA's score network,
    # ABMIL's attention), which decide where the model looks
    "attention_lr_scale": 1.0,
    "pooling": {
        "nonlinearity": "sigmoid",
        "multiplier": 1.0,
        "dropout_position": "input",
        "lr_scale": 1.0,
        "score_noise": 0.0,
    },
    # How node weights are traced back to patches: "selection" (paper / reference code:
    # through the top-k permutations, dropped nodes 0) or "receptive_field" (also back
    # through each convolution's propagation coefficients; see GraphEncoder).
    "importance": "selection",
    "embedding_norm": True,
    # How the modality vectors become one patient vector (radiopath.models.fusion):
    # "concat" (SPARRA), "mean" or "attention" (each modality projected to
    # ``fusion_hidden``, default ``hidden``), or "late": one model per modality on the same
    # folds, their risks z-scored on the training fold and combined by ``late.weights``
    # ("equal"; "c_index": proportional to each model's inner-validation C-index above
    # 0.5; "cox": a Cox model fitted on the training fold's risks).
    "fusion": "concat",
    "fusion_hidden": None,
    # learning-rate factor of the modality-attention network of "attention" fusion: at 1
    # its weights stay near uniform within a few hundred steps (benchmarks/bench_fusion.py)
    "fusion_lr_scale": 10.0,
    "late": {"weights": "equal"},
    # The clinical modality's MLP (MeD-3D's EHR branch) and how its columns are encoded:
    # scaling fitted on the training fold ("minmax" or "standard"); ``columns`` the cohort
    # columns to use (null: all of them).
    "clinical": {
        "hidden": [256, 128, 64],
        "dropout": 0.3,
        "scaling": "minmax",
        "columns": None,
    },
    # In training, drop each modality of a patient with this probability (never the last
    # one it has), so the model learns to predict from what a patient has.
    "modality_dropout": 0.0,
    # Weight of per-modality auxiliary heads (deep supervision): each modality's vector
    # gets its own head and loss beside the fused one, so every branch learns to predict
    # alone rather than leaning on the modality that fits first (0: none; ignored with
    # one modality). The auxiliary heads never predict.
    "unimodal_loss": 0.0,
    # MMDLM's schedule: the first ``unimodal_fraction`` of the epochs train on one
    # modality at a time (the others muted, in turn per batch), the rest jointly.
    "staged": {"unimodal_fraction": 0.0},
    # "cox", "discrete" (n_bins hazard logits) or "binary": an event by ``horizon`` (a
    # number in the cohort's time unit, or text such as "5y" / "60m" read in ``time_unit``:
    # days, months or years), patients censored before it left out of the loss, the
    # positives weighted n_negative / n_positive of the training fold.
    "head": "cox",
    "horizon": None,
    "time_unit": "days",
    "ties": "efron",
    # Cox head: each event's risk set spans the whole training fold (the batch's risks
    # with gradient, the other patients' most recent risks from a memory bank) instead of
    # the batch alone (radiopath.models.losses.cox_loss_with_memory)
    "cox_memory": False,
    "n_bins": 4,
    "standardize": True,
    # Project each modality's (standardised) node features on their leading principal
    # components before the encoder, fitted on the training fold's nodes (within-bag
    # covariance with ``center``): ``components`` 0 keeps every feature, a number keeps
    # that many (at most half the width), "auto" a quarter of the width but at least 16
    # (so 8 of 16-d features, 16 of 32-64-d, 256 of 1024-d); ``whiten`` gives
    # each retained direction unit variance.
    "pca": {"components": 0, "whiten": True},
    # "auto": a presence column per modality when some patient lacks a requested modality.
    "missing_indicator": "auto",
    "amp": True,
    # torch intra-op threads on the CPU while training and predicting (None: torch's
    # default, one per core). One thread is much faster for these small graphs on shared
    # cores; ignored on CUDA / MPS.
    "num_threads": 1,
    # On the CPU, let glibc keep freed memory for reuse instead of unmapping every large
    # block (radiopath.training.memory): about a third of a step on large graphs. Process-
    # wide and kept until the process ends.
    "tune_malloc": True,
    # "auto": keep graphs in memory when they fit in about cache_limit_gb.
    "cache_graphs": "auto",
    "cache_limit_gb": 4.0,
    "graph_preset": None,
    "strict": False,
    "sparra": {
        "alpha0": 2.0,
        "beta0": 1e-2,
        "mu0": 0.0,
        "lambda0": 1.0,
        "tau": 1e-3,
        "variational_weight": 0.1,
        "kl": "paper",
        "gamma_kl": False,
        "reconstruction": "gaussian",
        "hidden_channels": 256,
        "dropout": 0.25,
        "decoder_hidden": 64,
        "init_mu": None,
        "init_logvar": None,
        "sharpness": 1.0,
    },
    "abmil": {"hidden_channels": 128, "dropout": 0.25},
    "mean": {},
}

PRESETS: dict[str, dict] = {
    # The paper's text: GCN convolutions, top-k ratio 0.2, the expected KL of Eq. (5).
    "paper": {},
    # The authors' published code (sparra-method.md, section 7).
    "reference": {
        "conv": {"wsi": "gin", "ct": "gin"},
        "ratio": {"wsi": 0.2, "ct": 0.7},
        "sparra": {"kl": "reference", "reconstruction": "mse"},
    },
    # The paper's model, trained so that its top-k selection learns where the signal is,
    # with importance maps traced back through the convolutions too. Top-k pooling learns
    # its selection only through the gates of the nodes it keeps; Gumbel noise on the
    # scores lets nodes near the cut be kept (and learn) now and then, a 10x learning
    # rate for the two pooling projections lets the selection move within a short
    # schedule, and dropout on the surviving nodes only lets it see clean features. On
    # the synthetic test cohort (3 seeds, GCN, k = 0.2; benchmarks/bench_importance.py)
    # the planted share of the kept nodes rose from 0.26 to 0.58 (base rate 0.11), the
    # planted-patch importance AUC from 0.53 (paper, selection maps) to 0.78, the test
    # C-index from 0.63 to 0.75. With the paper's short schedule (20 epochs at 3e-4) on
    # 205 patients the selection barely moves: AUC 0.57 WSI (bench_pipeline.py).
    "interpretable": {
        "pooling": {"dropout_position": "pooled", "score_noise": 0.5, "lr_scale": 10.0},
        "importance": "receptive_field",
    },
}

# The default recipe, for cohorts of 100-500 patients where averaging is not enough (each
# choice backed by experiments/ablation-recipe.yaml and benchmarks/bench_recipe.py; the
# README has the table):
# - each bag read against its own column-wise median (``center: median``), so a
#   patient-level offset shared by every patch (scanner, stain, reconstruction kernel)
#   cannot reach the model; unlike the mean, the median is not moved by a small region, so
#   the rest of the bag does not carry a blurred copy of the region's shift, which gave the
#   selection a second, wrong way to fit (maps failing in whole folds);
# - each modality dropped from a training patient with probability 0.5 (never the last
#   one, ``modality_dropout``): with both modalities carrying the signal, the branch that
#   fits first (WSI) left the other's selection unsupervised, so its maps drifted to the
#   decoy or away from the region;
# - optimisation counted in steps: 400 Adam steps at batch 16 and lr 1e-3 (the paper's
#   20 epochs at batch 32 and 3e-4 are about 100 steps at 150 patients: nothing is fitted);
# - the epoch chosen on an inner validation split of the training fold (20%, from 30% of
#   the schedule on), never the test fold;
# - top-k ratio 0.5 (two layers keep 25% of the nodes; at 0.2 only 4% survive, fewer than
#   the relevant tissue, and C fell from 0.64 to 0.52 on the confounded cohort);
# - SPARRA's scores started away from the flat point (``init_mu`` 1, ``init_logvar`` -3:
#   at mu_s = 0 the weight's gradient vanishes), its weights as in the paper (``sharpness``
#   1: with 4 the weights sat on a few nodes, the selection below them got little gradient
#   and whole CT branches selected the wrong tissue) and its variational term at 0.01 (at
#   0.1 its KL keeps every variance up and the weights uniform);
# - node features projected on their leading whitened principal components, a quarter of
#   the feature width but at least 16 (at most half of it), fitted on the training fold's within-bag covariance (``pca``):
#   label-free, and it leaves the survival labels of 100-500 patients a 16-d search for
#   where to look instead of a 64-d one (SPARRA C 0.651/0.654/0.680 -> 0.715/0.706/0.714
#   on three 64-d confounded cohorts, importance AUC 0.52-0.81 -> 0.73-0.85). A fixed 16
#   was too few for 128-d features with 8 tissue types (C 0.642, maps at chance; 32
#   components: 0.691, AUC 0.79 / 0.77), and a quarter of 16-d features (4) too few on
#   the 16-d test cohort (AUC 0.30 where 8 gives above 0.8);
# - width 64 for the encoder and SPARRA's score network (as good as 128 and ~1.3x faster);
# - the interpretable preset's top-k exploration (Gumbel noise 0.5, 10x pooling lr,
#   dropout after the selection) and receptive-field importance maps.
PRESETS["learned"] = {
    **PRESETS["interpretable"],
    "center": "median",
    "modality_dropout": 0.5,
    "steps": 400,
    "batch_size": 16,
    "lr": 1e-3,
    "validation": {"fraction": 0.2, "metric": "c_index", "start": 0.3},
    "ratio": {"wsi": 0.5, "ct": 0.5},
    "hidden": 64,
    "pca": {"components": "auto", "whiten": True},
    "sparra": {
        "variational_weight": 0.01,
        "init_mu": 1.0,
        "init_logvar": -3.0,
        "hidden_channels": 64,
    },
    "abmil": {"hidden_channels": 64},
}

# Keys that do not change what a fold's model learns (allowed to differ on resume).
RUNTIME_KEYS = (
    "monitor_test",
    "cache_graphs",
    "cache_limit_gb",
    "strict",
    "amp",
    "num_threads",
    "tune_malloc",
    "importance",
)


_POSITIVE = Number(low=0, low_open=True)
_FRACTION = Number(low=0, high=1, high_open=True)  # [0, 1)
_COUNT = Number(low=1, integer=True)

# What each scalar key may hold (radiopath.config_rules); choices, and rules that need
# several keys at once, are checked in validate_training_config.
TRAINING_RULES: dict = {
    "seed": Number(low=0, integer=True),
    "epochs": _COUNT,
    "steps": Number(low=1, integer=True, optional=True),
    "batch_size": _COUNT,
    "lr": _POSITIVE,
    "weight_decay": Number(low=0),
    "optimizer.momentum": _FRACTION,
    "dropout": _FRACTION,
    "hidden": _COUNT,
    **{f"ratio.{m}": Number(low=0, high=1, low_open=True) for m in GRAPH_MODALITIES},
    "use_graph": Flag(),
    "center": OneOf(CENTERS),
    "validation.fraction": Number(low=0, high=0.9, high_open=True),
    "validation.start": _FRACTION,
    "monitor_test": Flag(),
    "attention_lr_scale": _POSITIVE,
    "pooling.multiplier": _POSITIVE,
    "pooling.lr_scale": _POSITIVE,
    "pooling.score_noise": Number(low=0),
    "embedding_norm": Flag(),
    "fusion": OneOf((*FUSIONS, "late")),
    "late.weights": OneOf(LATE_WEIGHTS),
    "optimizer.name": OneOf(("adam", "sgd")),
    "clinical.hidden": ListOf(_COUNT),
    "clinical.scaling": OneOf(("minmax", "standard")),
    "clinical.columns": Either((ListOf(Text(), allow_empty=True), OneOf((None,)))),
    "fusion_lr_scale": _POSITIVE,
    "fusion_hidden": Number(low=1, integer=True, optional=True),
    "clinical.dropout": _FRACTION,
    "modality_dropout": _FRACTION,
    "unimodal_loss": Number(low=0),
    "staged.unimodal_fraction": _FRACTION,
    "time_unit": OneOf(("days", "months", "years")),
    "cox_memory": Flag(),
    "n_bins": _COUNT,
    "n_folds": Number(low=2, integer=True),
    "standardize": Flag(),
    "pca.whiten": Flag(),
    "amp": Flag(),
    "num_threads": Number(low=1, integer=True, optional=True),
    "tune_malloc": Flag(),
    "cache_graphs": OneOf(("auto", True, False)),
    "cache_limit_gb": _POSITIVE,
    "strict": Flag(),
    "missing_indicator": OneOf(("auto", True, False)),
    **{f"sparra.{k}": _POSITIVE for k in ("alpha0", "beta0", "lambda0", "tau", "sharpness")},
    "sparra.mu0": Number(),
    "sparra.variational_weight": Number(low=0),
    "sparra.gamma_kl": Flag(),
    "sparra.hidden_channels": _COUNT,
    "sparra.dropout": _FRACTION,
    "sparra.decoder_hidden": _COUNT,
    "sparra.init_mu": Number(optional=True),
    "sparra.init_logvar": Number(optional=True),
    "abmil.hidden_channels": _COUNT,
    "abmil.dropout": _FRACTION,
}


def resolve_training_config(config: Mapping | None = None, **overrides) -> dict:
    """Defaults <- preset <- ``config`` <- ``overrides`` (``None`` values are ignored)."""
    user = deep_merge(dict(config or {}), {k: v for k, v in overrides.items() if v is not None})
    check_known_keys(user, allowed_keys())
    preset = user.get("preset", DEFAULT_CONFIG["preset"])
    if preset not in PRESETS:
        raise RadiopathInputError(
            f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}", field="preset"
        )
    cfg = deep_merge(deep_merge(copy.deepcopy(DEFAULT_CONFIG), PRESETS[preset]), user)
    if user.get("epochs") is not None and user.get("steps") is None:
        cfg["steps"] = None  # epochs asked for by name win over a preset's step count
    if isinstance(cfg["modalities"], str):
        cfg["modalities"] = [m.strip() for m in cfg["modalities"].split(",") if m.strip()]
    for key in ("ratio", "conv"):
        if not isinstance(cfg[key], Mapping):  # one value for every modality
            cfg[key] = {m: cfg[key] for m in GRAPH_MODALITIES}
    validate_training_config(cfg)
    return cfg


def allowed_keys() -> dict:
    """The keys a training configuration may set, at every depth (for
    :func:`radiopath.config.check_known_keys`): those of :data:`DEFAULT_CONFIG`, where
    ``conv`` and ``ratio`` are one value or a mapping per graph modality, and each
    aggregator's section (``sparra``, ``abmil``, ``mean``) takes its own options only."""
    per_modality = KeysOf(GRAPH_MODALITIES, scalar=True)
    return {**DEFAULT_CONFIG, "conv": per_modality, "ratio": per_modality}


def _bad(field: str, message: str):
    raise RadiopathInputError(message, field=field)


def validate_training_config(cfg: Mapping) -> None:
    """Raise :class:`RadiopathInputError` naming the first bad field."""
    mods = _validate_modalities(cfg)
    check_rules(cfg, TRAINING_RULES)
    _validate_schedule(cfg)
    _validate_encoder(cfg, mods)
    _validate_fusion(cfg, mods)
    _validate_prior(cfg, mods)


def _validate_modalities(cfg: Mapping) -> list[str]:
    """The aggregator and the modalities (returned as a list)."""
    if cfg["aggregator"] not in AGGREGATORS:
        _bad(
            "aggregator",
            f"unknown aggregator {cfg['aggregator']!r}; expected one of {sorted(AGGREGATORS)}",
        )
    mods = list(cfg["modalities"])
    if not mods:
        _bad("modalities", "no modality given")
    for m in mods:
        if m not in TRAINABLE_MODALITIES:
            _bad(
                "modalities",
                f"modality {m!r} cannot be trained; expected some of {list(TRAINABLE_MODALITIES)}",
            )
    if len(set(mods)) != len(mods):
        _bad("modalities", f"modality listed twice: {mods}")
    return mods


def _validate_schedule(cfg: Mapping) -> None:
    """Sizes, the schedule, input projection, unknown keys, inner validation, optimiser."""
    pca = cfg["pca"]
    k = pca["components"]
    if k != "auto" and (not isinstance(k, int) or isinstance(k, bool) or k < 0):
        _bad("pca.components", f"must be 'auto' or a non-negative integer (0: off), got {k!r}")
    check_known_keys(cfg, allowed_keys())
    val = cfg["validation"]
    if val["metric"] not in VALIDATION_METRICS:
        _bad("validation.metric", f"must be one of {VALIDATION_METRICS}, got {val['metric']!r}")


def _validate_encoder(cfg: Mapping, mods: list[str]) -> None:
    """Each graph modality's pooling ratio and convolution, threads, top-k pooling,
    importance tracing and the head."""
    for m in (m for m in mods if m in GRAPH_MODALITIES):
        if cfg["ratio"].get(m) is None:
            _bad(f"ratio.{m}", f"top-k ratio for {m!r} missing")
        if cfg["conv"].get(m) not in CONVS:
            _bad(
                f"conv.{m}",
                f"convolution for {m!r} must be one of {CONVS}, got {cfg['conv'].get(m)!r}",
            )
    pool = cfg["pooling"]
    if pool["nonlinearity"] not in ("sigmoid", "tanh"):
        _bad("pooling.nonlinearity", f"must be 'sigmoid' or 'tanh', got {pool['nonlinearity']!r}")
    if pool["dropout_position"] not in DROPOUT_POSITIONS:
        _bad(
            "pooling.dropout_position",
            f"must be one of {DROPOUT_POSITIONS}, got {pool['dropout_position']!r}",
        )
    if cfg["importance"] not in IMPORTANCE_MODES:
        _bad("importance", f"must be one of {IMPORTANCE_MODES}, got {cfg['importance']!r}")
    if cfg["head"] not in HEADS:
        _bad("head", f"must be one of {HEADS}, got {cfg['head']!r}")


def _validate_prior(cfg: Mapping, mods: list[str]) -> None:
    """Cox ties, SPARRA's prior, presence columns and in-memory graph presets."""
    if cfg["ties"] not in TIES:
        _bad("ties", f"must be one of {TIES}, got {cfg['ties']!r}")
    sp = cfg["sparra"]
    if sp["kl"] not in KL_VARIANTS:
        _bad("sparra.kl", f"must be one of {KL_VARIANTS}, got {sp['kl']!r}")
    if sp["reconstruction"] not in RECONSTRUCTIONS:
        _bad(
            "sparra.reconstruction",
            f"must be one of {RECONSTRUCTIONS}, got {sp['reconstruction']!r}",
        )
    if cfg["graph_preset"] is not None:  # graphs built in memory: each preset's keys
        from radiopath.graph.cohort import resolve_cohort_presets

        with config_section("graph_preset", whole="preset"):
            resolve_cohort_presets(cfg["graph_preset"], mods)


def _validate_fusion(cfg: Mapping, mods) -> None:
    """What the fusion and the binary head need beyond their keys' rules."""
    if cfg["fusion"] == "late" and len(mods) < 2:
        _bad("fusion", "late fusion needs at least two modalities")
    h = cfg["horizon"]
    if cfg["head"] == "binary":
        if h is None:
            _bad("horizon", "the binary head needs a horizon, e.g. 1826 or '5y'")
        if not training_horizon(cfg) > 0:
            _bad("horizon", f"must be positive, got {h!r}")
    elif h is not None:
        _bad("horizon", "is read by the binary head only (head: binary)")


def training_horizon(cfg: Mapping) -> float:
    """The binary head's horizon in the cohort's time unit (``horizon`` read in
    ``time_unit``, :func:`radiopath.evaluation.horizon.parse_horizon`)."""
    from radiopath.evaluation.horizon import parse_horizon

    return parse_horizon(cfg["horizon"], cfg["time_unit"])


def aggregator_options(cfg: Mapping) -> dict:
    """The keyword options of the configured aggregator."""
    return dict(cfg.get(cfg["aggregator"], {}) or {})
