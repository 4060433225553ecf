"""The sections of the training configuration (:class:`~radiopath.training.config.TrainingConfig`):
the optimiser, per-modality convolutions and pooling ratios, inner validation, top-k pooling,
late fusion, the clinical branch, staged training, the input projection and one section per
aggregator (``sparra``, ``abmil``, ``mean``), each holding exactly its constructor's options.
"""

from __future__ import annotations

from dataclasses import dataclass

from radiopath.config_rules import Either, Flag, ListOf, Number, OneOf, Text
from radiopath.models.aggregators import KL_VARIANTS, RECONSTRUCTIONS
from radiopath.models.encoders import CONVS, DROPOUT_POSITIONS
from radiopath.typed_config import TypedConfig, setting

LATE_WEIGHTS = ("equal", "c_index", "cox")
VALIDATION_METRICS = ("c_index", "loss")

POSITIVE = Number(low=0, low_open=True)
FRACTION = Number(low=0, high=1, high_open=True)  # [0, 1)
COUNT = Number(low=1, integer=True)
_RATIO = Number(low=0, high=1, low_open=True)


@dataclass(frozen=True)
class OptimizerConfig(TypedConfig):
    """The optimiser: Adam (the paper) or SGD with momentum (MMDLM: SGD, lr 0.004, momentum 0.9)."""

    name: str = setting("adam", OneOf(("adam", "sgd")), "adam or sgd.")
    momentum: float = setting(0.9, FRACTION, "SGD's momentum.")


_CONV_KINDS = (
    " gcn: the paper's; gcn_root: GCN with a weight of its own on each node's row, so that a"
    " node can be told from its surroundings (radiopath.models.propagation.GCNRootConv);"
    " gin: the reference code's."
)


@dataclass(frozen=True)
class ConvConfig(TypedConfig):
    """Graph convolution of each graph modality (one value sets every modality)."""

    wsi: str = setting("gcn", OneOf(CONVS), "Convolution of the WSI encoder." + _CONV_KINDS)
    ct: str = setting("gcn", OneOf(CONVS), "Convolution of the CT encoder." + _CONV_KINDS)


@dataclass(frozen=True)
class RatioConfig(TypedConfig):
    """Top-k pooling ratio of each graph modality (one value sets every modality)."""

    wsi: float = setting(0.2, _RATIO, "Share of the WSI nodes each pooling layer keeps.")
    ct: float = setting(0.2, _RATIO, "Share of the CT nodes each pooling layer keeps.")


@dataclass(frozen=True)
class ValidationConfig(TypedConfig):
    """Model selection on an inner validation split of the training fold (never the test fold)."""

    fraction: float = setting(
        0.0,
        Number(low=0, high=0.9, high_open=True),
        "Share of the training fold held out (0: none, the last epoch is kept).",
    )
    metric: str = setting(
        "c_index",
        OneOf(VALIDATION_METRICS),
        "Criterion: the C-index or the loss (the Cox partial likelihood).",
    )
    start: float = setting(
        0.0, FRACTION, "First share of the schedule whose epochs are not eligible (nor scored)."
    )
    patience: float | None = setting(
        None,
        Number(low=0, low_open=True, high=1, optional=True),
        "Stop once the best eligible epoch has not been beaten for this share of the "
        "schedule's epochs (null: run every epoch). The epochs cut come after the one "
        "selected, so the model is the same unless a later epoch would have beaten it.",
    )


@dataclass(frozen=True)
class PoolingConfig(TypedConfig):
    """Top-k pooling of the graph encoder (PyG's TopKPooling)."""

    nonlinearity: str = setting("sigmoid", OneOf(("sigmoid", "tanh")), "Gate nonlinearity.")
    multiplier: float = setting(1.0, POSITIVE, "Gate multiplier.")
    dropout_position: str = setting(
        "input",
        OneOf(DROPOUT_POSITIONS),
        "Where the dropout acts: input (after the input projection, before the selection "
        "scores) or pooled (on the surviving nodes); the paper does not say.",
    )
    lr_scale: float = setting(1.0, POSITIVE, "Learning-rate factor of the pooling projections.")
    score_noise: float = setting(
        0.0,
        Number(low=0),
        "Gumbel noise scale of the top-k scores in training (0: PyG's deterministic top-k).",
    )
    ratio_warmup: float = setting(
        0.0,
        FRACTION,
        "Fraction of the training schedule over which the top-k ratio falls linearly from "
        "keeping every node to its target (0: the target from the first step).",
    )


@dataclass(frozen=True)
class LateConfig(TypedConfig):
    """Late fusion (``fusion: late``): how the unimodal models' z-scored risks are combined."""

    weights: str = setting(
        "equal",
        OneOf(LATE_WEIGHTS),
        "equal; c_index: proportional to each model's inner-validation C-index above 0.5; "
        "cox: a Cox model fitted on the training fold's risks.",
    )


@dataclass(frozen=True)
class ClinicalConfig(TypedConfig):
    """The clinical modality's MLP (MeD-3D's EHR branch) and how its columns are encoded."""

    hidden: tuple = setting([256, 128, 64], ListOf(COUNT), "Widths of the MLP's layers.")
    dropout: float = setting(0.3, FRACTION, "Dropout of the MLP.")
    scaling: str = setting(
        "minmax", OneOf(("minmax", "standard")), "Scaling fitted on the training fold."
    )
    columns: tuple | None = setting(
        None,
        Either((ListOf(Text(), allow_empty=True), OneOf((None,)))),
        "The cohort's columns to use (null: all of them).",
    )


@dataclass(frozen=True)
class StagedConfig(TypedConfig):
    """MMDLM's schedule: unimodal epochs first, then joint ones."""

    unimodal_fraction: float = setting(
        0.0,
        FRACTION,
        "First share of the epochs trained on one modality at a time (the others muted, in "
        "turn per batch).",
    )


@dataclass(frozen=True)
class PCAConfig(TypedConfig):
    """Input projection: node features on their leading principal components (training fold).

    Fitted on the training fold's nodes (the within-bag covariance with ``center``), before
    the encoder."""

    components: object = setting(
        0,
        Either((OneOf(("auto",)), Number(low=0, integer=True))),
        "0 keeps every feature, a number keeps that many (at most half the width), auto a "
        "quarter of the width but at least 16.",
    )
    whiten: bool = setting(True, Flag(), "Give each retained direction unit variance.")


@dataclass(frozen=True)
class SparraConfig(TypedConfig):
    """SPARRA's options (its prior, KL, reconstruction and score network; SparraAggregation)."""

    alpha0: float = setting(2.0, POSITIVE, "Normal-Gamma prior: shape of the precision (paper 2).")
    beta0: float = setting(1e-2, POSITIVE, "Normal-Gamma prior: rate of the precision (1e-2).")
    mu0: float = setting(0.0, Number(), "Normal-Gamma prior: mean of the node scores (0).")
    lambda0: float = setting(1.0, POSITIVE, "Normal-Gamma prior: precision scale (1).")
    tau: float = setting(1e-3, POSITIVE, "Decoder noise precision (paper 1e-3).")
    variational_weight: float = setting(
        0.1, Number(low=0), "Weight of KL + reconstruction against the survival loss."
    )
    kl: str = setting(
        "paper", OneOf(KL_VARIANTS), "paper: the expected KL of Eq. (5); reference: the code's."
    )
    gamma_kl: bool = setting(False, Flag(), "Add KL(q(v|s) || p(v)), Eq. (3)'s second term.")
    reconstruction: str = setting(
        "gaussian",
        OneOf(RECONSTRUCTIONS),
        "-log p(X | s) of Eq. (6) (gaussian) or tau times the mean squared error (mse, the "
        "reference code).",
    )
    hidden_channels: int = setting(256, COUNT, "Width of the gated score network.")
    dropout: float = setting(0.25, FRACTION, "Dropout in the score network.")
    decoder_hidden: int = setting(64, COUNT, "Width of the decoder's hidden layer.")
    init_mu: float | None = setting(
        None,
        Number(optional=True),
        "Initial bias of the score network's mean output (null: PyTorch's initialisation).",
    )
    init_logvar: float | None = setting(
        None,
        Number(optional=True),
        "Initial bias of its log-variance output (null: PyTorch's initialisation).",
    )
    sharpness: float = setting(1.0, POSITIVE, "Exponent of the node weights (1: the paper).")


@dataclass(frozen=True)
class AbmilConfig(TypedConfig):
    """Gated-attention MIL's options (radiopath.models.aggregators.GatedAttentionAggregation)."""

    hidden_channels: int = setting(128, COUNT, "Width of the attention branches V and U.")
    dropout: float = setting(0.25, FRACTION, "Dropout inside the attention branches.")


@dataclass(frozen=True)
class MeanConfig(TypedConfig):
    """The mean aggregator has no option."""
