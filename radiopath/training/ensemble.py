"""A fold's ensemble (``ensemble: K``): K members trained one after the other, read as one.

Member ``i`` is trained exactly as the single model of seed ``seed + i`` (its own
initialisation, batches, noise and inner validation split), into its own checkpoint and
log (``checkpoints/fold_<k>.member_<i>.pt``; member 0 keeps ``fold_<k>.pt``), so a killed
ensemble resumes member by member, and a run that grows from K to K + 1 members keeps the
K it has. The members are combined by
:class:`~radiopath.models.ensemble.EnsembleSurvivalModel`, each member's risk standardised
by its mean and standard deviation over the fold's training patients (a binary head's
logits are averaged as they are, so the ensemble's score is still a logit).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from radiopath.models.ensemble import EnsembleSurvivalModel
from radiopath.training.config import TrainingConfig
from radiopath.training.predict import predict
from radiopath.training.state import fold_file_stem, read_checkpoint

log = logging.getLogger(__name__)


def member_config(cfg: TrainingConfig, member: int) -> TrainingConfig:
    """Member ``member``'s configuration: the single model of seed ``cfg.seed + member``."""
    return replace(cfg, seed=int(cfg.seed) + member, ensemble=1)


def member_finished(out_dir: Path, fold: int, member: int, cfg: TrainingConfig) -> bool:
    """Whether member ``member`` of fold ``fold`` has a finished checkpoint of this
    configuration (a parallel run does not submit it again)."""
    path = out_dir / "checkpoints" / f"{fold_file_stem(fold, member)}.pt"
    if not path.exists():
        return False
    state = read_checkpoint(path, "cpu")
    fingerprint = member_config(cfg, member).fingerprint()
    return bool(state and state.get("finished") and state.get("fingerprint") == fingerprint)


def fit_ensemble(
    fold, train, test, store, cfg: TrainingConfig, *, device, **options
) -> EnsembleSurvivalModel:
    """Train (or resume, or load) every member of fold ``fold`` and return them as one model
    in evaluation mode; ``options`` are :func:`~radiopath.training.loop.fit_fold`'s.

    The members' passes over the training patients, which standardise their risks, also
    give the ensemble's training risks and vectors: ``training_prediction`` holds
    ``(patient ids, risk, embedding)`` as :func:`~radiopath.training.predict.predict` would
    return them (the fold's export reads it instead of predicting them again; a binary
    head, which standardises nothing, has none)."""
    from radiopath.training.loop import fit_fold

    amp = bool(cfg.amp) and device.type == "cuda"
    members, mean, scale, epochs, scores, seen = [], [], [], [], [], []
    for i in range(int(cfg.ensemble)):
        model = fit_fold(
            fold, train, test, store, member_config(cfg, i), device=device, member=i, **options
        )
        mu, sd = 0.0, 1.0  # a binary head's logits share a scale: their mean is a logit
        if cfg.head != "binary":
            risk, embedding, _ = predict(
                model, train, store, device, cfg.batch_size, amp, num_threads=cfg.num_threads
            )
            seen.append((risk, embedding))
            mu, sd = float(np.mean(risk)), float(np.std(risk))
            if not np.isfinite(sd) or sd <= 0:
                # a member whose risk is constant on its own training patients learned
                # nothing to rank by; it still counts, on a unit scale
                log.warning("fold %d: member %d gives one risk to every training patient", fold, i)
                sd = 1.0
        members.append(model)
        mean.append(mu)
        scale.append(sd)
        epochs.append(model.selected_epoch)
        scores.append(model.inner_validation_c_index)
    ensemble = EnsembleSurvivalModel(members, torch.tensor(mean), torch.tensor(scale)).to(device)
    ensemble.eval()
    ensemble.selected_epoch = epochs
    if seen:  # the training patients' risks and vectors, as predict would give them
        risk = ensemble.combine_risks([torch.from_numpy(r.astype(np.float32)) for r, _ in seen])
        ensemble.training_prediction = (
            tuple(r.patient_id for r in train),
            risk.numpy().astype(np.float64),
            np.concatenate([e for _, e in seen], 1),
        )
    known = [s for s in scores if s is not None]
    # the score late fusion weighs a modality by: the members' mean
    ensemble.inner_validation_c_index = float(np.mean(known)) if known else None
    return ensemble
