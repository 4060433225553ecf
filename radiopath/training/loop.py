"""Training one fold: optimisation, per-epoch log, checkpoints and resume, prediction.

Adam (lr 3e-4, weight decay 1e-5) with cosine annealing over the epochs, batches of 32
patients, loss = survival loss + the aggregator's weighted auxiliary loss (Gao et al. 2025,
Sec. 3.1 and Eq. 8). Mixed precision is used on CUDA only. After every epoch the model,
optimiser, scheduler and gradient-scaler states go to ``checkpoints/fold_<k>.pt`` (atomic
write), so a killed run continues from its last finished epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.models.losses import cox_loss_with_memory, discrete_time_bins, horizon_labels
from radiopath.models.multimodal import MultimodalSurvivalModel
from radiopath.runkit import torch_save, write_csv
from radiopath.runtime import intra_op_threads
from radiopath.training.config import TrainingConfig, training_horizon
from radiopath.training.data import (
    GraphStore,
    MappedGraphStore,
    PatientRecord,
    collate,
    feature_statistics,
    principal_components,
)
from radiopath.training.memory import tune_cpu_malloc
from radiopath.training.predict import _autocast, _batches, c_index, predict
from radiopath.training.state import (
    RiskMemory,
    fold_file_stem,
    read_checkpoint,
    rng_state,
    set_rng_state,
)
from radiopath.training.validation import (
    patience_epochs,
    score_inner_validation,
    stops_before,
    validation_split,
)

log = logging.getLogger(__name__)


def build_model(
    cfg: TrainingConfig, in_channels: Mapping[str, int], missing_indicator: bool
) -> MultimodalSurvivalModel:
    """The model a configuration describes (the configuration's names become the model's
    keyword arguments here, and nowhere else)."""
    pool = cfg.pooling
    return MultimodalSurvivalModel(
        {m: in_channels[m] for m in cfg.modalities},
        cfg.aggregator,
        hidden_channels=cfg.hidden,
        ratio=cfg.ratio.to_dict(),
        conv=cfg.conv.to_dict(),
        use_graph=cfg.use_graph,
        dropout=cfg.dropout,
        aggregator_options=cfg.aggregator_options(),
        head=cfg.head,
        n_bins=cfg.n_bins,
        missing_indicator=missing_indicator,
        embedding_norm=cfg.embedding_norm,
        input_components=cfg.pca.components or None,
        encoder_options={
            "nonlinearity": pool.nonlinearity,
            "multiplier": pool.multiplier,
            "dropout_position": pool.dropout_position,
            "score_noise": pool.score_noise,
            "ratio_warmup": pool.ratio_warmup,
            "importance": cfg.importance,
            "center": cfg.center,
        },
        fusion=cfg.fusion,
        fusion_hidden=cfg.fusion_hidden,
        clinical_hidden=tuple(cfg.clinical.hidden),
        clinical_dropout=float(cfg.clinical.dropout),
        unimodal_heads=float(cfg.unimodal_loss) > 0 and len(cfg.modalities) > 1,
    )


def parameter_groups(
    model: MultimodalSurvivalModel,
    lr: float,
    pool_lr_scale: float = 1.0,
    attention_lr_scale: float = 1.0,
    fusion_lr_scale: float = 1.0,
):
    """Adam parameter groups: the top-k pooling projections at ``lr * pool_lr_scale``, the
    aggregators' scoring networks (SPARRA's ``score_*``, ABMIL's ``attention_*``) at
    ``lr * attention_lr_scale``, the modality-attention network of ``attention`` fusion at
    ``lr * fusion_lr_scale``, the rest at ``lr``."""
    pool, attention, fusion, rest = [], [], [], []
    for name, param in model.named_parameters():
        if ".pools." in name:
            pool.append(param)
        elif name.startswith("aggregators.") and (".score_" in name or ".attention_" in name):
            attention.append(param)
        elif name.startswith("fusion.attention_"):
            fusion.append(param)
        else:
            rest.append(param)
    groups = [{"params": rest, "lr": lr}]
    for params, scale in ((pool, pool_lr_scale), (attention, attention_lr_scale)):
        if params:
            groups.append({"params": params, "lr": lr * scale})
    if fusion:
        groups.append({"params": fusion, "lr": lr * fusion_lr_scale})
    return groups


def schedule_epochs(cfg: TrainingConfig, n_train: int) -> int:
    """Epochs to run: ``cfg.epochs``, or enough for ``cfg.steps`` optimiser steps."""
    if cfg.steps is None:
        return int(cfg.epochs)
    per_epoch = n_train // cfg.batch_size + (1 if n_train % cfg.batch_size >= 2 else 0)
    return max(1, math.ceil(int(cfg.steps) / max(per_epoch, 1)))


def fit_fold(
    fold: int,
    train: Sequence[PatientRecord],
    test: Sequence[PatientRecord],
    store: GraphStore,
    cfg: TrainingConfig,
    *,
    in_channels: Mapping[str, int],
    missing_indicator: bool,
    out_dir: Path,
    device: torch.device,
    resume: bool = True,
    progress: bool = True,
    member: int | None = None,
) -> MultimodalSurvivalModel:
    """Train one fold's model and return it (in evaluation mode).

    Writes ``logs/fold_<k>.csv`` (one row per epoch: learning rate, loss parts, train and
    validation C-index, seconds; the validation set is the fold's held-out patients, used
    for monitoring only: training always runs the configured number of epochs) and
    ``checkpoints/fold_<k>.pt``. With ``resume`` an existing checkpoint of the same
    configuration is continued (or, if finished, loaded). Training and prediction run
    with ``cfg.num_threads`` torch intra-op threads on the CPU (default 1, ``None``:
    torch's default; see :func:`intra_op_threads`); the caller's setting is restored. On
    the CPU, ``cfg.tune_malloc`` (default True) makes glibc keep freed memory for reuse
    (:func:`~radiopath.training.memory.tune_cpu_malloc`).

    With ``cfg.ensemble`` above 1 the fold's members are trained one after the other and
    returned as one :class:`~radiopath.models.ensemble.EnsembleSurvivalModel`
    (:func:`~radiopath.training.ensemble.fit_ensemble`); ``member`` (set by it) trains
    member ``i`` alone, into ``fold_<k>.member_<i>`` files (member 0: ``fold_<k>``).
    """
    options = dict(
        in_channels=in_channels,
        missing_indicator=missing_indicator,
        out_dir=out_dir,
        device=device,
        resume=resume,
        progress=progress,
    )
    if cfg.ensemble > 1 and member is None:
        from radiopath.training.ensemble import fit_ensemble

        return fit_ensemble(fold, train, test, store, cfg, **options)
    if device.type == "cpu" and cfg.tune_malloc:
        tune_cpu_malloc()
    name = fold_file_stem(fold, member)
    with intra_op_threads(cfg.num_threads, device):
        return _fit_fold(fold, train, test, store, cfg, name=name, **options)


def _fit_input_map(model: MultimodalSurvivalModel, train, store, cfg) -> None:
    """Fit each modality's input map on the training patients: standardisation, then (with
    ``pca.components``) the principal components, as many as the model's encoder reads."""
    for m in model.graph_modalities:
        if cfg.standardize:
            model.set_feature_scaling(m, *feature_statistics(train, store, m))
        scale = model.input_map(m)
        if len(scale) == 3:
            components = principal_components(
                train,
                store,
                m,
                scale[2].shape[1],
                scale[0],
                scale[1],
                center=bool(cfg.center),
                whiten=bool(cfg.pca.whiten),
            )
            model.set_input_components(m, components)


@dataclass
class _FoldRun:
    """One fold's training state: what a checkpoint saves and a resumed run restores."""

    fold: int
    cfg: TrainingConfig
    model: MultimodalSurvivalModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool
    memory: RiskMemory | None = None
    position: dict | None = None  # patient -> row of the risk memory
    best: dict = field(default_factory=lambda: {"epoch": -1, "score": -math.inf, "model": None})
    rows: list = field(default_factory=list)
    start_epoch: int = 0
    n_epochs: int = 1

    def checkpoint(self, epoch: int, fingerprint: str, finished: bool) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "best": self.best,
            "memory": None if self.memory is None else tuple(self.memory),
            "fingerprint": fingerprint,
            "finished": finished,
        }


def _fit_fold(
    fold,
    train,
    test,
    store,
    cfg,
    *,
    in_channels,
    missing_indicator,
    out_dir,
    device,
    resume,
    progress,
    name,
) -> MultimodalSurvivalModel:
    ckpt_path = out_dir / "checkpoints" / f"{name}.pt"
    log_path = out_dir / "logs" / f"{name}.csv"
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = cfg.fingerprint()
    seed = int(cfg.seed) * 1000 + fold
    # every generator a checkpoint saves, so a fold's checkpoint is the same file whichever
    # process (or executor worker) trained it
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    train, inner_val = validation_split(train, float(cfg.validation.fraction), seed)
    n_epochs = schedule_epochs(cfg, len(train))
    first_eligible = int(math.floor(float(cfg.validation.start) * n_epochs))
    state = read_checkpoint(ckpt_path, device) if resume and ckpt_path.exists() else None
    if state is not None and state.get("fingerprint") != fingerprint:
        raise RadiopathInputError(
            "checkpoint was written with a different configuration; use a new output "
            "folder or resume=False (--no-resume) to start again",
            path=ckpt_path,
        )
    run = _start_fold(
        fold, cfg, train, store, in_channels, missing_indicator, device, n_epochs, state is None
    )
    run.n_epochs = n_epochs
    if state is not None:
        _restore(run, state, log_path)
    # the input map is fixed now: apply it once per graph rather than at every step
    model = run.model
    fold_store = MappedGraphStore(store, model) if model.input_components is not None else store
    epochs = range(run.start_epoch, n_epochs)
    bar = tqdm(epochs, desc=f"fold {fold}", unit="epoch", leave=False, disable=not progress)
    patience = patience_epochs(cfg.validation.patience, n_epochs) if inner_val else None
    for epoch in bar:
        if stops_before(run.best["epoch"], epoch, patience):
            log.info("fold %d: stopped before epoch %d (best %d)", fold, epoch, run.best["epoch"])
            break
        tic = _time.perf_counter()
        row = _train_epoch(run, train, fold_store, epoch, seed)
        if inner_val and epoch >= first_eligible:  # earlier epochs cannot be chosen
            score_inner_validation(run, row, inner_val, fold_store)
        if test and cfg.monitor_test:
            risk, _, _ = predict(
                model, test, fold_store, device, cfg.batch_size, run.amp, num_threads=None
            )
            row["val_c_index"] = c_index([r.time for r in test], [r.event for r in test], risk)
        row["seconds"] = _time.perf_counter() - tic
        run.rows.append(row)
        write_csv(pd.DataFrame(run.rows), log_path)
        last = epoch == n_epochs - 1 or stops_before(run.best["epoch"], epoch + 1, patience)
        torch_save(run.checkpoint(epoch, fingerprint, last), ckpt_path)
        shown = {"c_inner": "inner_val_c_index", "c_test": "val_c_index"}
        bar.set_postfix(
            loss=f"{row['loss']:.3f}",
            c_train=f"{row['train_c_index']:.3f}",
            **{k: f"{row[v]:.3f}" for k, v in shown.items() if v in row},
        )
    _keep_selected(run, fold, bool(inner_val), n_epochs)
    model.eval()
    return model


def _keep_selected(run: _FoldRun, fold: int, inner_val: bool, n_epochs: int) -> None:
    """With an inner validation split, load the best eligible epoch's state (model selection
    never sees the test fold); record which epoch the model is and its validation C-index
    (late fusion's ``c_index`` weights)."""
    model, metric = run.model, run.cfg.validation.metric
    selected = inner_val and run.best["model"] is not None
    if selected:
        model.load_state_dict(run.best["model"])
        log.info(
            "fold %d: selected epoch %d (inner validation %s %.3f)",
            fold,
            run.best["epoch"],
            metric,
            run.best["score"],
        )
    model.selected_epoch = run.best["epoch"] if inner_val else n_epochs - 1
    model.inner_validation_c_index = (
        float(run.best["score"]) if selected and metric == "c_index" else None
    )


def _start_fold(
    fold, cfg, train, store, in_channels, missing_indicator, device, n_epochs, fit_map
) -> _FoldRun:
    """A new model, its optimiser, schedule and scaler, and the Cox risk memory when
    configured. With ``fit_map`` the input map is fitted on ``train`` (not needed when a
    checkpoint is restored: its buffers hold the map)."""
    model = build_model(cfg, in_channels, missing_indicator)
    if fit_map:
        _fit_input_map(model, train, store, cfg)
    if cfg.head == "discrete":
        model.bin_edges.copy_(
            discrete_time_bins([r.time for r in train], [r.event for r in train], cfg.n_bins)
        )
    if cfg.head == "binary":
        model.set_horizon(*horizon_weighting(train, training_horizon(cfg)))
    model.to(device)
    amp = bool(cfg.amp) and device.type == "cuda"
    groups = parameter_groups(
        model,
        cfg.lr,
        float(cfg.pooling.lr_scale),
        float(cfg.attention_lr_scale),
        float(cfg.fusion_lr_scale),
    )
    if cfg.optimizer.name == "sgd":
        optimizer = torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=float(cfg.optimizer.momentum),
            weight_decay=cfg.weight_decay,
        )
    else:
        optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = _FoldRun(
        fold,
        cfg,
        model,
        optimizer,
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_epochs),
        torch.amp.GradScaler(device.type, enabled=amp),
        device,
        amp,
    )
    if cfg.cox_memory and cfg.head == "cox":
        # risk sets over the whole training fold (cox_loss_with_memory); the memory starts
        # empty at each fold, and fills as patients are seen
        run.position = {r.patient_id: i for i, r in enumerate(train)}
        run.memory = RiskMemory(
            torch.zeros(len(train)),
            torch.tensor([r.time for r in train], dtype=torch.float32),
            torch.zeros(len(train), dtype=torch.bool),
        )
    return run


def _restore(run: _FoldRun, state: dict, log_path: Path) -> None:
    """Continue from a checkpoint: every state it holds (the fitted input map is among the
    model's buffers), the random generators, the best epoch so far and the log rows."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if "rng" in state:
        set_rng_state(state["rng"])
    if state.get("best") is not None:
        run.best = state["best"]
    if run.memory is not None and state.get("memory") is not None:
        run.memory = RiskMemory(*state["memory"])
    run.start_epoch = int(state["epoch"]) + 1
    if log_path.exists():
        rows = pd.read_csv(log_path)
        run.rows = rows[rows["epoch"] < run.start_epoch].to_dict("records")
    log.info("fold %d: resuming after epoch %d", run.fold, run.start_epoch - 1)


def horizon_weighting(train: Sequence[PatientRecord], horizon: float) -> tuple[float, float]:
    """``(horizon, pos_weight)`` of the binary head on a training fold: the positives'
    loss weight ``n_negative / n_positive`` among the patients whose status at the horizon
    is known. Weighting rather than oversampling (MeD-3D used SMOTE on tabular data): the
    patient vectors are learned inside the model, so there is no fixed feature vector to
    interpolate, and weighting equals resampling in expectation without synthetic patients.
    """
    time = torch.tensor([r.time for r in train], dtype=torch.float64)
    event = torch.tensor([r.event for r in train])
    label, usable = horizon_labels(time, event, horizon)
    positives, negatives = int(label.sum()), int((usable & ~label).sum())
    if positives == 0 or negatives == 0:
        raise RadiopathInputError(
            f"the training fold has {positives} event(s) by the horizon {horizon:g} and "
            f"{negatives} patient(s) followed beyond it; the binary head needs both",
            field="horizon",
        )
    return horizon, negatives / positives


def _muted(
    chunk, modalities, step: int, generator: torch.Generator, *, unimodal: bool, dropout: float
):
    """The batch's records as training sees them: in the unimodal stage of staged training
    (``unimodal``) one modality only (in turn per step), otherwise, with modality
    ``dropout`` p, each modality of a patient dropped with probability p (never its last
    one)."""
    if unimodal:
        keep = modalities[step % len(modalities)]
        return [replace(r, modalities=tuple(m for m in r.modalities if m == keep)) for r in chunk]
    p = float(dropout)
    if p <= 0:
        return chunk
    out = []
    for r in chunk:
        drop = (torch.rand(len(r.modalities), generator=generator) < p).tolist()
        if all(drop):
            drop[int(torch.randint(len(drop), (1,), generator=generator))] = False
        out.append(replace(r, modalities=tuple(m for m, d in zip(r.modalities, drop) if not d)))
    return out


def _train_epoch(run: _FoldRun, train, store, epoch: int, seed: int) -> dict:
    """One pass over the training patients in a seeded order; the log row of the epoch
    (learning rate, mean loss parts, training C-index)."""
    model, cfg = run.model, run.cfg
    model.train()
    gen = torch.Generator().manual_seed(seed * 10_000 + epoch)
    # modality dropout draws from its own stream, so the batch order is that of a run
    # without it
    drop_gen = torch.Generator().manual_seed(seed * 10_000 + epoch + 7_919)
    unimodal = epoch < int(float(cfg.staged.unimodal_fraction) * run.n_epochs)
    sums: dict[str, float] = {}
    n_seen = 0
    seen_time, seen_event, seen_risk = [], [], []
    n_batches = math.ceil(len(train) / cfg.batch_size)
    for step, chunk in enumerate(_batches(train, cfg.batch_size, gen)):
        model.set_training_progress((epoch * n_batches + step) / (run.n_epochs * n_batches))
        if len(chunk) < 2:
            # A lone patient is its own risk set: its Cox partial likelihood is 0, and
            # batch normalisation needs two patients. Skipping it loses nothing.
            continue
        chunk = _muted(
            chunk,
            model.modalities,
            step,
            drop_gen,
            unimodal=unimodal,
            dropout=cfg.modality_dropout,
        )
        batch = collate(chunk, store, model.modalities).to(run.device)
        parts, risk = _train_step(run, chunk, batch, epoch)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(chunk)
        n_seen += len(chunk)
        seen_time.append(batch.time.cpu())
        seen_event.append(batch.event.cpu())
        seen_risk.append(risk)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    row = {"epoch": epoch, "lr": lr}
    row.update({k: v / max(n_seen, 1) for k, v in sums.items()})
    row["train_c_index"] = c_index(
        torch.cat(seen_time), torch.cat(seen_event), torch.cat(seen_risk)
    )
    return row


def _train_step(run: _FoldRun, chunk, batch, epoch: int) -> tuple[dict, torch.Tensor]:
    """One optimiser step on ``batch``: the loss parts and the batch's risks (CPU)."""
    model, cfg = run.model, run.cfg
    run.optimizer.zero_grad(set_to_none=True)
    with _autocast(run.device, run.amp):
        out = model(batch, node_weights=False)
    if run.memory is not None:
        memory = run.memory
        idx = torch.tensor([run.position[r.patient_id] for r in chunk])
        others = memory.valid.clone()
        others[idx] = False
        surv = cox_loss_with_memory(
            out.risk,
            batch.time,
            batch.event,
            memory.risk[others],
            memory.time[others],
            ties=cfg.ties,
        )
    else:
        surv = model.survival_loss(out, batch.time, batch.event, ties=cfg.ties)
    loss = surv + out.aux_loss.float()
    extra = {}
    if out.unimodal:
        extra["unimodal_loss"] = model.unimodal_loss(out, batch.time, batch.event, cfg.ties)
        loss = loss + float(cfg.unimodal_loss) * extra["unimodal_loss"].float()
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"fold {run.fold}, epoch {epoch}: the loss is {float(loss)} "
            f"(survival {float(surv)}, auxiliary {float(out.aux_loss)})"
        )
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    risk = out.risk.detach().float().cpu()
    if run.memory is not None:
        run.memory.risk[idx] = risk
        run.memory.valid[idx] = True
    parts = {"loss": loss, "survival_loss": surv, "aux_loss": out.aux_loss, **out.losses, **extra}
    return parts, risk
