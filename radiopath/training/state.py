"""What a fold's checkpoint holds besides the model and its configuration fingerprint
(:func:`radiopath.runkit.config_fingerprint` without the runtime keys): every random
generator, the Cox risk memory, and reading a checkpoint that may be damaged."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def read_checkpoint(path: Path, device) -> dict | None:
    """A fold's checkpoint, or ``None`` when it is unreadable (truncated by a crash of an
    older version, a full disk, a copy gone wrong): it is reported, kept aside as
    ``<name>.corrupt`` for inspection, and the fold starts again rather than failing."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise ValueError("not a radiopath training checkpoint")
        return state
    except Exception as exc:  # torch raises several types for a damaged zip or pickle
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        log.warning(
            "checkpoint %s is unreadable (%s: %s); kept as %s, the fold starts again",
            path,
            type(exc).__name__,
            exc,
            aside.name,
        )
        return None


def rng_state() -> dict:
    """Every random generator a training step draws from (restored on resume)."""
    import random

    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    import random

    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class RiskMemory(NamedTuple):
    """The training patients' most recent risks (``cox_memory``), in ``train`` order."""

    risk: Tensor
    time: Tensor
    valid: Tensor


def fold_file_stem(fold: int, member: int | None = None) -> str:
    """The name of a fold's checkpoint and log without suffix: ``fold_<k>``, and
    ``fold_<k>.member_<i>`` for member ``i`` > 0 of an ensemble."""
    return f"fold_{fold}" + (f".member_{member}" if member else "")
