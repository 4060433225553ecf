"""Model selection on an inner validation split of the training fold, never the test fold.

:func:`validation_split` holds out a stratified share of the outer training fold; after
every epoch :func:`score_inner_validation` scores it and keeps the best eligible epoch's
weights (the model a fold ends with); with ``validation.patience`` training stops once that
epoch has not been beaten for a share of the schedule (:func:`stops_before`), which only
cuts epochs that would not have been selected unless a later one beat it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from radiopath.errors import RadiopathInputError
from radiopath.training.data import PatientRecord
from radiopath.training.predict import c_index, predict


def validation_split(
    records: Sequence[PatientRecord], fraction: float, seed: int
) -> tuple[list[PatientRecord], list[PatientRecord]]:
    """Split a training fold into (inner training, inner validation) patients.

    Stratified by event (:class:`sklearn.model_selection.StratifiedShuffleSplit`), seeded;
    only ``records`` (the outer training fold) are ever seen, so the outer test fold cannot
    influence model selection. ``fraction`` 0 returns ``(records, [])``.
    """
    records = list(records)
    if fraction <= 0:
        return records, []
    from sklearn.model_selection import StratifiedShuffleSplit

    event = np.array([int(r.event) for r in records])
    n_val = max(2, int(round(fraction * len(records))))
    if len(records) - n_val < 2:
        raise RadiopathInputError(
            f"{len(records)} training patients are too few for a validation fraction of {fraction}",
            field="validation.fraction",
        )
    stratify = event if min(np.bincount(event, minlength=2)) >= 2 else np.zeros_like(event)
    split = StratifiedShuffleSplit(1, test_size=n_val, random_state=seed % (2**32))
    train_idx, val_idx = next(split.split(np.zeros(len(records)), stratify))
    return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(val_idx)]


def patience_epochs(patience: float | None, n_epochs: int) -> int | None:
    """``validation.patience`` (a share of the schedule) in epochs, at least one; None: off."""
    return None if patience is None else max(1, math.ceil(float(patience) * n_epochs))


def stops_before(best_epoch: int, epoch: int, patience: int | None) -> bool:
    """Whether training stops before ``epoch``: the best eligible epoch so far
    (``best_epoch``; -1 while there is none) has not been beaten by the ``patience`` epochs
    after it. Read from the restored best epoch, so a killed run stops where it would have."""
    return patience is not None and best_epoch >= 0 and epoch - 1 - best_epoch >= patience


def score_inner_validation(run, row: dict, records, store) -> None:
    """Score the inner validation split into ``row`` after an eligible epoch (the epochs
    before ``validation.start`` are not scored: they cannot be chosen); keep the model if it
    is the best so far (model selection never sees the outer test fold)."""
    score = validation_score(run.model, records, store, run.device, run.cfg, run.amp)
    row["inner_val_c_index"], row["inner_val_loss"] = score
    value = score[0] if run.cfg.validation.metric == "c_index" else -score[1]
    if np.isfinite(value) and value > run.best["score"]:
        run.best = {
            "epoch": row["epoch"],
            "score": float(value),
            "model": {k: v.detach().clone() for k, v in run.model.state_dict().items()},
        }


@torch.no_grad()
def validation_score(model, records, store, device, cfg, amp) -> tuple[float, float]:
    """(C-index, survival loss) of ``records`` in evaluation mode."""
    risk, _, _ = predict(model, records, store, device, cfg.batch_size, amp, num_threads=None)
    time = torch.tensor([r.time for r in records], dtype=torch.float32)
    event = torch.tensor([r.event for r in records], dtype=torch.long)
    from radiopath.models.losses import binary_horizon_loss, cox_loss

    scores = torch.as_tensor(risk, dtype=torch.float32)
    if cfg.head == "binary":
        loss = binary_horizon_loss(
            scores, time, event, float(model.horizon), float(model.pos_weight)
        )
    else:
        loss = cox_loss(scores, time, event, ties=cfg.ties)
    loss = float(loss)
    return c_index(time.numpy(), event.numpy(), risk), loss
