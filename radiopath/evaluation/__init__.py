"""Downstream survival evaluation: the paper's 19-study protocol on per-fold embeddings.

>>> from radiopath.evaluation import evaluate_folds, summarize
>>> result = evaluate_folds(folds, aggregator="sparra", modalities=["wsi", "ct"])  # doctest: +SKIP
>>> print(summarize(result.metrics))  # doctest: +SKIP

* :func:`evaluate_folds` -- screening, scaling, inner-CV model selection and test metrics
  for RSF, CoxPH, Coxnet and FSVM on each outer fold (backend ``sksurv`` or ``torch``);
* :func:`evaluate_run` -- the same on a training run directory, writing ``predictions.csv``,
  ``metrics.csv``, ``summary.md`` and Kaplan-Meier figures;
* :func:`summarize` -- per-study mean (sd), averages over models and win counts;
* :func:`km_risk_groups` -- risk groups split at the mean / median training risk, with
  Kaplan-Meier curves and the log-rank p-value;
* :mod:`radiopath.evaluation.stats` -- patient-level bootstrap intervals of every study and
  paired comparisons of aggregators (bootstrap and Wilcoxon, Holm-corrected), vectorised;
* :mod:`radiopath.evaluation.torch_models` and :mod:`radiopath.evaluation.torch_metrics` --
  batched torch versions of scikit-survival's CoxPH, Coxnet, FastSurvivalSVM and metrics.
"""

from radiopath.evaluation.config import (
    DEFAULT_CONFIG,
    EXTRA_METRICS,
    METRICS,
    MODELS,
    EvaluationConfig,
    resolve_evaluation_config,
)
from radiopath.evaluation.protocol import (
    EvaluationResult,
    FittedModel,
    PreparedFold,
    c_index_random_ties,
    evaluate_folds,
    forest_depth_risks,
    prepare_fold,
)
from radiopath.evaluation.report import RiskGroups, evaluate_run, km_risk_groups, summarize
from radiopath.evaluation.screening import select_features, univariate_cox_pvalues

__all__ = [
    "DEFAULT_CONFIG",
    "EXTRA_METRICS",
    "METRICS",
    "MODELS",
    "EvaluationConfig",
    "EvaluationResult",
    "FittedModel",
    "PreparedFold",
    "RiskGroups",
    "c_index_random_ties",
    "evaluate_folds",
    "evaluate_run",
    "forest_depth_risks",
    "km_risk_groups",
    "prepare_fold",
    "resolve_evaluation_config",
    "select_features",
    "summarize",
    "univariate_cox_pvalues",
]
