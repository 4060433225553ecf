"""The extraction stage's settings: their defaults, the keys it takes and what each may hold.

:func:`check_extract_config` refuses an unknown key or a bad value, naming the key (and the
file the settings were read from), before any image is opened or anything is written; both
``radiopath extract`` and :func:`radiopath.extract.extract_cohort` call it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from radiopath.config import KeysOf, check_known_keys, naming_file
from radiopath.config_rules import (
    FILE_PATH,
    MAPPING,
    Either,
    Flag,
    ListOf,
    Number,
    OneOf,
    Text,
    check_rules,
)
from radiopath.executors import Executor, resolve_executor_config

IMAGE_MODALITIES = ("wsi", "ct")

DEFAULTS: dict = {
    "encoder": "handcrafted",
    "checkpoint": None,
    "workers": 0,
    "strict": False,
    "device": "auto",
    "batch_size": 64,
    "mpp": 0.5,
    "patch_size": 224,
    "slide_mpp": None,
    "min_tissue": 0.5,
    "ct_spacing": [1.0, 1.0, 1.0],
    "ct_patch_size": 16,
    "ct_margin_mm": 5.0,
    "ct_min_fraction": 0.25,
    "ct_normalisation": "auto",
    "random_init": False,
    "executor": "local",
}

_POSITIVE = Number(low=0, low_open=True)
_COUNT = Number(low=1, integer=True)
_SHARE = Number(low=0, high=1)
_CHECKPOINT = Either((FILE_PATH, OneOf((None,))))

# What each key may hold (radiopath.config_rules); ``executor`` is checked by
# radiopath.executors' resolver, an encoder's name by the encoder registry.
EXTRACT_RULES: dict = {
    "encoder": Either((Text(), MAPPING)),
    **{f"encoder.{m}": Text() for m in IMAGE_MODALITIES},
    "checkpoint": Either((_CHECKPOINT, MAPPING)),
    **{f"checkpoint.{m}": _CHECKPOINT for m in IMAGE_MODALITIES},
    "workers": Number(low=0, integer=True),
    "strict": Flag(),
    "device": Text(),
    "batch_size": _COUNT,
    "mpp": _POSITIVE,
    "patch_size": _COUNT,
    "slide_mpp": Number(low=0, low_open=True, optional=True),
    "min_tissue": _SHARE,
    "ct_spacing": ListOf(_POSITIVE, 3),
    "ct_patch_size": _COUNT,
    "ct_margin_mm": Number(low=0),
    "ct_min_fraction": _SHARE,
    "ct_normalisation": OneOf(("auto", "none", "med3d")),
    "random_init": Flag(),
}


def allowed_keys() -> dict:
    """The keys an extract configuration may set: :data:`DEFAULTS`, where ``encoder`` and
    ``checkpoint`` are one value or a mapping per imaging modality."""
    per_modality = KeysOf(IMAGE_MODALITIES, scalar=True)
    return {**DEFAULTS, "encoder": per_modality, "checkpoint": per_modality}


def check_extract_config(cfg: Mapping, path: str | os.PathLike | None = None) -> None:
    """Refuse an unknown key or a bad value of extraction settings (all of them or some),
    naming the key and ``path``, the file they were read from."""
    check_known_keys(cfg, allowed_keys(), path=path)
    check_rules(cfg, EXTRACT_RULES, path=path)
    executor = cfg.get("executor")
    if not isinstance(executor, Executor):  # an open one is the caller's
        with naming_file(path, cfg):
            resolve_executor_config(executor)
