"""Training: aggregators with a Cox head under outer cross-validation, and their exports.

    >>> from radiopath.training import train_cross_validated
    >>> result = train_cross_validated("cohort.csv", "graphs", aggregator="sparra",
    ...                                modalities=["wsi", "ct"], out_dir="runs/sparra")

See :mod:`radiopath.training.cv` for the files a run writes.
"""

from radiopath.runtime import resolve_device
from radiopath.training.config import (
    DEFAULT_CONFIG,
    PRESETS,
    TrainingConfig,
    resolve_training_config,
)
from radiopath.training.cv import TrainingResult, train_cross_validated
from radiopath.training.data import (
    GraphStore,
    PatientRecord,
    collate,
    merge_graphs,
    patch_importance,
)
from radiopath.training.export import export_fold, modalities_label
from radiopath.training.folds import check_folds, make_folds, read_folds, write_folds
from radiopath.training.loop import build_model, fit_fold
from radiopath.training.predict import c_index, predict

__all__ = [
    "DEFAULT_CONFIG",
    "PRESETS",
    "GraphStore",
    "PatientRecord",
    "TrainingConfig",
    "TrainingResult",
    "build_model",
    "c_index",
    "check_folds",
    "collate",
    "export_fold",
    "fit_fold",
    "make_folds",
    "merge_graphs",
    "modalities_label",
    "patch_importance",
    "predict",
    "read_folds",
    "resolve_device",
    "resolve_training_config",
    "train_cross_validated",
    "write_folds",
]
