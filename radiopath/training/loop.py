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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sksurv.metrics import concordance_index_censored
from tqdm.auto import tqdm

from radiopath.errors import RadiopathInputError
from radiopath.models.losses import cox_loss_with_memory, discrete_time_bins
from radiopath.models.multimodal import ModelOutput, MultimodalSurvivalModel
from radiopath.runkit import torch_save, write_csv
from radiopath.training.config import aggregator_options
from radiopath.training.data import (
    GraphStore,
    PatientRecord,
    collate,
    feature_statistics,
    principal_components,
)
from radiopath.training.memory import tune_cpu_malloc
from radiopath.training.state import (
    RiskMemory,
    config_fingerprint,
    read_checkpoint,
    rng_state,
    set_rng_state,
)

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else Apple MPS, else CPU; otherwise the named device."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise RadiopathInputError(f"unknown device {device!r} ({exc})", field="device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RadiopathInputError("CUDA was asked for but is not available", field="device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RadiopathInputError("MPS was asked for but is not available", field="device")
    return dev


def c_index(time, event, risk) -> float:
    """Harrell's C-index (:func:`sksurv.metrics.concordance_index_censored`); NaN if undefined."""
    event = np.asarray(event).astype(bool)
    risk = np.asarray(risk, dtype=np.float64)
    if not event.any() or len(risk) < 2 or not np.isfinite(risk).all():
        return float("nan")
    try:
        return float(concordance_index_censored(event, np.asarray(time, dtype=np.float64), risk)[0])
    except ValueError:  # no comparable pair
        return float("nan")


def build_model(
    cfg: Mapping, in_channels: Mapping[str, int], missing_indicator: bool
) -> MultimodalSurvivalModel:
    """The model a configuration describes."""
    return MultimodalSurvivalModel(
        {m: in_channels[m] for m in cfg["modalities"]},
        cfg["aggregator"],
        hidden_channels=cfg["hidden"],
        ratio=cfg["ratio"],
        conv=cfg["conv"],
        use_graph=cfg["use_graph"],
        dropout=cfg["dropout"],
        aggregator_options=aggregator_options(cfg),
        head=cfg["head"],
        n_bins=cfg["n_bins"],
        missing_indicator=missing_indicator,
        embedding_norm=cfg["embedding_norm"],
        input_components=cfg["pca"]["components"] or None,
        encoder_options={
            **{k: v for k, v in cfg["pooling"].items() if k != "lr_scale"},
            "importance": cfg["importance"],
            "center": cfg["center"],
        },
    )


def parameter_groups(
    model: MultimodalSurvivalModel,
    lr: float,
    pool_lr_scale: float = 1.0,
    attention_lr_scale: float = 1.0,
):
    """Adam parameter groups: the top-k pooling projections at ``lr * pool_lr_scale``, the
    aggregators' scoring networks (SPARRA's ``score_*``, ABMIL's ``attention_*``) at
    ``lr * attention_lr_scale``, the rest at ``lr``."""
    pool, attention, rest = [], [], []
    for name, param in model.named_parameters():
        if ".pools." in name:
            pool.append(param)
        elif name.startswith("aggregators.") and (".score_" in name or ".attention_" in name):
            attention.append(param)
        else:
            rest.append(param)
    groups = [{"params": rest, "lr": lr}]
    if pool:
        groups.append({"params": pool, "lr": lr * pool_lr_scale})
    if attention:
        groups.append({"params": attention, "lr": lr * attention_lr_scale})
    return groups


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


def schedule_epochs(cfg: Mapping, n_train: int) -> int:
    """Epochs to run: ``cfg["epochs"]``, or enough for ``cfg["steps"]`` optimiser steps."""
    steps = cfg.get("steps")
    if steps is None:
        return int(cfg["epochs"])
    per_epoch = n_train // cfg["batch_size"] + (1 if n_train % cfg["batch_size"] >= 2 else 0)
    return max(1, math.ceil(int(steps) / max(per_epoch, 1)))


def _batches(records: Sequence[PatientRecord], batch_size: int, generator: torch.Generator | None):
    order = (
        torch.randperm(len(records), generator=generator).tolist()
        if generator is not None
        else list(range(len(records)))
    )
    for start in range(0, len(order), batch_size):
        yield [records[i] for i in order[start : start + batch_size]]


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=enabled)


@contextmanager
def intra_op_threads(num_threads: int | None, device: torch.device) -> Iterator[None]:
    """Run the enclosed block with ``num_threads`` torch intra-op threads on the CPU.

    Restores the previous setting afterwards. ``None`` (or a non-CPU device, where the
    host threads only launch kernels) leaves torch's setting alone. Training on small
    graphs is dominated by many short kernels: on a shared 2-core machine torch's default
    of one thread per core made an epoch of the demo cohort about 10x slower than a single
    thread (4.8 s against 0.4 s), as the threads wait on each other.
    """
    if num_threads is None or device.type != "cpu":
        yield
        return
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise RadiopathInputError(
            f"num_threads must be a positive integer or None, got {num_threads!r}",
            field="num_threads",
        )
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class NodeExplanation:
    """One patient's graph of one modality, explained per input node.

    Attributes
    ----------
    columns
        ``importance`` (the aggregator's weight traced back to the input nodes),
        ``contribution`` (signed share of the risk; Cox head only) and, for SPARRA,
        ``s_mean`` / ``s_sd`` (posterior of the spatial importance; NaN for nodes dropped
        by pooling), each ``[n_nodes]``.
    risk_offset
        The part of the risk no node carries: ``risk = sum of every modality's
        contributions + risk_offset`` (None without a Cox head).
    """

    columns: dict
    risk_offset: float | None

    @property
    def importance(self) -> np.ndarray:
        return self.columns["importance"]


@torch.no_grad()
def predict(
    model: MultimodalSurvivalModel,
    records: Sequence[PatientRecord],
    store: GraphStore,
    device: torch.device,
    batch_size: int = 32,
    amp: bool = False,
    node_weights: bool = False,
    num_threads: int | None = 1,
):
    """Risks and embeddings of ``records`` (evaluation mode), optionally node weights.

    ``num_threads`` torch intra-op threads are used on the CPU (:func:`intra_op_threads`;
    ``None``: torch's default).

    Returns
    -------
    risk : ndarray [n]
    embedding : ndarray [n, E]
    weights : dict
        ``{(patient_id, modality): NodeExplanation}`` per input node: the aggregator's
        weight, the signed risk contribution and SPARRA's posterior of ``s`` (only when
        ``node_weights``).
    """
    with intra_op_threads(num_threads, device):
        return _predict(model, records, store, device, batch_size, amp, node_weights)


def _predict(model, records, store, device, batch_size, amp, node_weights):
    model.eval()
    risks, embeddings, weights = [], [], {}
    for chunk in _batches(records, batch_size, None):
        batch = collate(chunk, store, model.modalities).to(device)
        with _autocast(device, amp):
            out: ModelOutput = model(batch, node_weights=node_weights)
        risks.append(out.risk.float().cpu())
        embeddings.append(out.embedding.float().cpu())
        if node_weights:
            offset = None if out.risk_offset is None else out.risk_offset.float().cpu().numpy()
            for m, w in out.node_weight.items():
                mb = batch.modalities[m]
                ptr = mb.graphs.ptr.cpu().numpy()
                columns = {"importance": w}
                if m in out.node_contribution:
                    columns["contribution"] = out.node_contribution[m]
                if m in out.node_posterior:
                    columns["s_mean"], columns["s_sd"] = out.node_posterior[m]
                columns = {k: v.float().cpu().numpy() for k, v in columns.items()}
                for g, row in enumerate(mb.patient_index.cpu().numpy()):
                    part = {k: v[ptr[g] : ptr[g + 1]] for k, v in columns.items()}
                    weights[(chunk[row].patient_id, m)] = NodeExplanation(
                        part, None if offset is None else float(offset[row])
                    )
    risk = torch.cat(risks).numpy().astype(np.float64)
    embedding = torch.cat(embeddings).numpy()
    return risk, embedding, weights


def fit_fold(
    fold: int,
    train: Sequence[PatientRecord],
    test: Sequence[PatientRecord],
    store: GraphStore,
    cfg: Mapping,
    *,
    in_channels: Mapping[str, int],
    missing_indicator: bool,
    out_dir: Path,
    device: torch.device,
    resume: bool = True,
    progress: bool = True,
) -> MultimodalSurvivalModel:
    """Train one fold's model and return it (in evaluation mode).

    Writes ``logs/fold_<k>.csv`` (one row per epoch: learning rate, loss parts, train and
    validation C-index, seconds; the validation set is the fold's held-out patients, used
    for monitoring only: training always runs the configured number of epochs) and
    ``checkpoints/fold_<k>.pt``. With ``resume`` an existing checkpoint of the same
    configuration is continued (or, if finished, loaded). Training and prediction run
    with ``cfg["num_threads"]`` torch intra-op threads on the CPU (default 1, ``None``:
    torch's default; see :func:`intra_op_threads`); the caller's setting is restored. On
    the CPU, ``cfg["tune_malloc"]`` (default True) makes glibc keep freed memory for reuse
    (:func:`~radiopath.training.memory.tune_cpu_malloc`).
    """
    if device.type == "cpu" and cfg.get("tune_malloc", True):
        tune_cpu_malloc()
    with intra_op_threads(cfg.get("num_threads", 1), device):
        return _fit_fold(
            fold,
            train,
            test,
            store,
            cfg,
            in_channels=in_channels,
            missing_indicator=missing_indicator,
            out_dir=out_dir,
            device=device,
            resume=resume,
            progress=progress,
        )


def _fit_input_map(model: MultimodalSurvivalModel, train, store, cfg) -> None:
    """Fit each modality's input map on the training patients: standardisation, then (with
    ``pca.components``) the principal components, as many as the model's encoder reads."""
    for m in model.modalities:
        if cfg["standardize"]:
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
                center=bool(cfg["center"]),
                whiten=bool(cfg["pca"]["whiten"]),
            )
            model.set_input_components(m, components)


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
) -> MultimodalSurvivalModel:
    ckpt_path = out_dir / "checkpoints" / f"fold_{fold}.pt"
    log_path = out_dir / "logs" / f"fold_{fold}.csv"
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = config_fingerprint(cfg)
    seed = int(cfg["seed"]) * 1000 + fold
    # every generator a checkpoint saves, so a fold's checkpoint is the same file whichever
    # process (or executor worker) trained it
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    val_cfg = cfg["validation"]
    train, inner_val = validation_split(train, float(val_cfg["fraction"]), seed)
    n_epochs = schedule_epochs(cfg, len(train))
    first_eligible = int(math.floor(float(val_cfg["start"]) * n_epochs))

    model = build_model(cfg, in_channels, missing_indicator)
    state = read_checkpoint(ckpt_path, device) if resume and ckpt_path.exists() else None
    if state is None:  # a checkpoint holds the fitted input map among its buffers
        _fit_input_map(model, train, store, cfg)
    if cfg["head"] == "discrete":
        model.bin_edges.copy_(
            discrete_time_bins([r.time for r in train], [r.event for r in train], cfg["n_bins"])
        )
    model.to(device)
    amp = bool(cfg["amp"]) and device.type == "cuda"
    optimizer = torch.optim.Adam(
        parameter_groups(
            model,
            cfg["lr"],
            float(cfg["pooling"]["lr_scale"]),
            float(cfg["attention_lr_scale"]),
        ),
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    start_epoch, rows = 0, []
    best = {"epoch": -1, "score": -math.inf, "model": None}
    if state is not None:
        if state.get("fingerprint") != fingerprint:
            raise RadiopathInputError(
                "checkpoint was written with a different configuration; use a new output "
                "folder or resume=False (--no-resume) to start again",
                path=ckpt_path,
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            set_rng_state(state["rng"])
        if state.get("best") is not None:
            best = state["best"]
        start_epoch = int(state["epoch"]) + 1
        if log_path.exists():
            rows = pd.read_csv(log_path).query("epoch < @start_epoch").to_dict("records")
        log.info("fold %d: resuming after epoch %d", fold, start_epoch - 1)

    memory = None
    if cfg["cox_memory"] and cfg["head"] == "cox":
        # risk sets over the whole training fold (cox_loss_with_memory); the memory starts
        # empty at each fold (and on resume), and fills as patients are seen
        position = {r.patient_id: i for i, r in enumerate(train)}
        memory = RiskMemory(
            torch.zeros(len(train)),
            torch.tensor([r.time for r in train], dtype=torch.float32),
            torch.zeros(len(train), dtype=torch.bool),
        )
        if state is not None and state.get("memory") is not None:
            memory = RiskMemory(*state["memory"])
    epochs = range(start_epoch, n_epochs)
    bar = tqdm(epochs, desc=f"fold {fold}", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        tic = _time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(seed * 10_000 + epoch)
        sums: dict[str, float] = {}
        n_seen = 0
        tr_time, tr_event, tr_risk = [], [], []
        for chunk in _batches(train, cfg["batch_size"], gen):
            if len(chunk) < 2:
                # A lone patient is its own risk set: its Cox partial likelihood is 0, and
                # batch normalisation needs two patients. Skipping it loses nothing.
                continue
            batch = collate(chunk, store, model.modalities).to(device)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp):
                out = model(batch, node_weights=False)
            if memory is not None:
                idx = torch.tensor([position[r.patient_id] for r in chunk])
                others = memory.valid.clone()
                others[idx] = False
                surv = cox_loss_with_memory(
                    out.risk,
                    batch.time,
                    batch.event,
                    memory.risk[others],
                    memory.time[others],
                    ties=cfg["ties"],
                )
            else:
                surv = model.survival_loss(out, batch.time, batch.event, ties=cfg["ties"])
            loss = surv + out.aux_loss.float()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"fold {fold}, epoch {epoch}: the loss is {float(loss)} "
                    f"(survival {float(surv)}, auxiliary {float(out.aux_loss)})"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            b = len(chunk)
            n_seen += b
            parts = {"loss": loss, "survival_loss": surv, "aux_loss": out.aux_loss, **out.losses}
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * b
            tr_time.append(batch.time.cpu())
            tr_event.append(batch.event.cpu())
            tr_risk.append(out.risk.detach().float().cpu())
            if memory is not None:
                memory.risk[idx] = tr_risk[-1]
                memory.valid[idx] = True
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        row = {"epoch": epoch, "lr": lr}
        row.update({k: v / max(n_seen, 1) for k, v in sums.items()})
        row["train_c_index"] = c_index(torch.cat(tr_time), torch.cat(tr_event), torch.cat(tr_risk))
        if inner_val:
            score = _validation_score(model, inner_val, store, device, cfg, amp)
            row["inner_val_c_index"], row["inner_val_loss"] = score
            value = score[0] if val_cfg["metric"] == "c_index" else -score[1]
            if epoch >= first_eligible and np.isfinite(value) and value > best["score"]:
                best = {
                    "epoch": epoch,
                    "score": float(value),
                    "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                }
        if test and cfg.get("monitor_test", True):
            risk, _, _ = predict(
                model, test, store, device, cfg["batch_size"], amp, num_threads=None
            )
            row["val_c_index"] = c_index([r.time for r in test], [r.event for r in test], risk)
        row["seconds"] = _time.perf_counter() - tic
        rows.append(row)
        write_csv(pd.DataFrame(rows), log_path)
        torch_save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "best": best,
                "memory": None if memory is None else tuple(memory),
                "fingerprint": fingerprint,
                "finished": epoch == n_epochs - 1,
            },
            ckpt_path,
        )
        bar.set_postfix(
            loss=f"{row['loss']:.3f}",
            c_train=f"{row['train_c_index']:.3f}",
            c_val=f"{row.get('val_c_index', math.nan):.3f}",
        )
    if inner_val and best["model"] is not None:
        # Model selection on the inner validation split: the state of the best epoch.
        model.load_state_dict(best["model"])
        log.info(
            "fold %d: selected epoch %d (inner validation %s %.3f)",
            fold,
            best["epoch"],
            val_cfg["metric"],
            best["score"],
        )
    model.selected_epoch = best["epoch"] if inner_val else n_epochs - 1
    model.eval()
    return model


@torch.no_grad()
def _validation_score(model, records, store, device, cfg, amp) -> tuple[float, float]:
    """(C-index, survival loss) of ``records`` in evaluation mode."""
    risk, _, _ = predict(model, records, store, device, cfg["batch_size"], amp, num_threads=None)
    time = torch.tensor([r.time for r in records], dtype=torch.float32)
    event = torch.tensor([r.event for r in records], dtype=torch.long)
    from radiopath.models.losses import cox_loss

    loss = float(
        cox_loss(torch.as_tensor(risk, dtype=torch.float32), time, event, ties=cfg["ties"])
    )
    return c_index(time.numpy(), event.numpy(), risk), loss
