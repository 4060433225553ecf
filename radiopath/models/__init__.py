"""Models: graph encoders, patient-level aggregators, survival heads and losses.

>>> from radiopath.models import MultimodalSurvivalModel
>>> model = MultimodalSurvivalModel({"wsi": 1024, "ct": 768}, aggregator="sparra")
"""

from radiopath.models.aggregators import (
    AGGREGATORS,
    AggregationOutput,
    GatedAttentionAggregation,
    MeanAggregation,
    PatientAggregation,
    SparraAggregation,
    expected_normal_kl,
    make_aggregator,
    normal_gamma_posterior,
    reference_kl,
)
from radiopath.models.encoders import EncodedGraphs, GraphEncoder
from radiopath.models.losses import (
    cox_loss,
    cox_partial_log_likelihood,
    discrete_time_bins,
    discrete_time_nll,
    discrete_time_risk,
    time_to_bin,
)
from radiopath.models.multimodal import (
    ModalityBatch,
    ModelOutput,
    MultimodalSurvivalModel,
    PatientBatch,
)

__all__ = [
    "AGGREGATORS",
    "AggregationOutput",
    "EncodedGraphs",
    "GatedAttentionAggregation",
    "GraphEncoder",
    "MeanAggregation",
    "ModalityBatch",
    "ModelOutput",
    "MultimodalSurvivalModel",
    "PatientAggregation",
    "PatientBatch",
    "SparraAggregation",
    "cox_loss",
    "cox_partial_log_likelihood",
    "discrete_time_bins",
    "discrete_time_nll",
    "discrete_time_risk",
    "expected_normal_kl",
    "make_aggregator",
    "normal_gamma_posterior",
    "reference_kl",
    "time_to_bin",
]
