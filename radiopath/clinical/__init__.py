"""Clinical variables: their encoding for models (:mod:`.preprocess`) and the clinical
baselines an image risk is compared against (:mod:`.baselines`), written by the benchmark's
optional clinical stage (:mod:`.stage`)."""

from radiopath.clinical.preprocess import ClinicalColumn, ClinicalPreprocessor, parse_ordinal

__all__ = ["ClinicalColumn", "ClinicalPreprocessor", "parse_ordinal"]
