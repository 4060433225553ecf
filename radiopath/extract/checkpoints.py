"""Local checkpoints of the encoders with weights: reading a state dict and loading it.

Nothing is downloaded: :func:`load_checkpoint` reads a local file (``weights_only``) and
unwraps the state dict; :func:`load_weights` loads it strictly, naming the checkpoint and the
offending keys when it does not fit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from radiopath.errors import RadiopathInputError

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- checkpoints


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint (``state_dict`` / ``model`` / ``net`` wrappers)."""
    for _ in range(3):
        if (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            return dict(obj)
        if isinstance(obj, Mapping):
            for key in ("state_dict", "model", "net", "model_state_dict", "teacher"):
                if key in obj:
                    obj = obj[key]
                    break
            else:
                break
        elif isinstance(obj, nn.Module):
            return obj.state_dict()
        else:
            break
    raise RadiopathInputError(
        "no state dict found in the checkpoint (expected a mapping of parameter names to "
        "tensors, possibly under 'state_dict' or 'model')",
        path=path,
        field="checkpoint",
    )


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a local PyTorch checkpoint's state dict (``weights_only``; never downloads)."""
    path = Path(path)
    if not path.is_file():
        raise RadiopathInputError("checkpoint file does not exist", path=path, field="checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad file
        raise RadiopathInputError(
            f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})",
            path=path,
            field="checkpoint",
        ) from exc
    return _unwrap_state_dict(obj, path)


def load_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    path: str | os.PathLike,
    strip_prefixes: Sequence[str] = ("module.", "model.", "backbone.", "encoder."),
    ignore: Sequence[str] = (),
) -> None:
    """Load ``state`` into ``model``, strictly apart from parameters starting with ``ignore``.

    Leading ``strip_prefixes`` (DataParallel's ``module.``, wrappers' ``model.``) are
    removed first. Shape mismatches or model parameters absent from the checkpoint raise a
    :class:`RadiopathInputError` naming the checkpoint and the first offending keys; keys of
    the checkpoint the model does not have (a classification or segmentation head) are
    logged and dropped.
    """
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in strip_prefixes:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        cleaned[key] = value
    own = model.state_dict()
    wanted = {k for k in own if not any(k.startswith(p) for p in ignore)}
    wanted = {k for k in wanted if not k.endswith("num_batches_tracked")}
    missing = sorted(wanted - cleaned.keys())
    mismatched = [
        f"{k} {tuple(cleaned[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(wanted & cleaned.keys())
        if tuple(cleaned[k].shape) != tuple(own[k].shape)
    ]
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} parameter(s) missing (e.g. {missing[:3]})")
        if mismatched:
            parts.append(f"{len(mismatched)} with another shape (e.g. {mismatched[:3]})")
        raise RadiopathInputError(
            f"checkpoint does not fit {type(model).__name__}: " + "; ".join(parts),
            path=path,
            field="checkpoint",
        )
    unexpected = sorted(set(cleaned) - own.keys())
    if unexpected:
        log.info(
            "%s: ignoring %d checkpoint key(s) the model lacks (e.g. %s)",
            path,
            len(unexpected),
            unexpected[:3],
        )
    model.load_state_dict({k: v for k, v in cleaned.items() if k in own}, strict=False)
