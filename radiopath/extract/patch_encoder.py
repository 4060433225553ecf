"""The patch-encoder base class, its preprocessing helpers and shared constants.

:class:`PatchEncoder` is what every registered encoder is: preprocessing plus a model mapping
a batch of patches to ``[B, dim]``, run by :meth:`PatchEncoder.encode`. The helpers scale,
normalise and resize batches. An encoder's :meth:`~PatchEncoder.config` names its weights
file by :func:`radiopath.runkit.file_identity`.

The numbered references ([1]_ ...) are listed in :mod:`radiopath.extract.encoders`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HU_RANGE = (-1024.0, 1024.0)
#: MeD-3D intensity normalisation constants (HU) [3]_.
MED3D_MEAN = -158.58
MED3D_STD = 324.70
CT_NORMALISATIONS = ("none", "med3d")


# --------------------------------------------------------------------------- base class


class PatchEncoder(nn.Module):
    """A patch encoder: preprocessing plus a model mapping patches to ``[B, dim]``.

    Subclasses set :attr:`name`, :attr:`modality`, :attr:`dim`, implement
    :meth:`preprocess` and :meth:`forward`, and may set :attr:`ct_normalisation` (the CT
    intensity normalisation the model was trained with: ``"none"`` = HU, ``"med3d"``).
    """

    name: str = "encoder"
    modality: str = "wsi"
    dim: int = 0
    ct_normalisation: str = "none"

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw patches (``uint8`` tiles or HU patches) -> model input."""
        return batch.float()

    def config(self) -> dict:
        """What identifies this encoder's output (used to decide whether a file is stale)."""
        return {"name": self.name, "modality": self.modality, "dim": self.dim}

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocess and embed one batch on the encoder's device; returns ``[B, dim]`` float32."""
        out = self(self.preprocess(batch.to(self.device, non_blocking=True)))
        return out.float()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, modality={self.modality!r}, dim={self.dim}"


def _as_float_rgb(batch: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``[B, 3, H, W]`` -> float in [0, 1]."""
    if batch.dtype == torch.uint8:
        return batch.float() / 255.0
    return batch.float()


def _normalise_rgb(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _resize(x: torch.Tensor, size: int | Sequence[int] | None) -> torch.Tensor:
    """Resize the spatial axes of ``[B, C, ...]`` to ``size`` (no-op when already there)."""
    if size is None:
        return x
    spatial = x.shape[2:]
    target = tuple(size) if isinstance(size, Sequence) else (int(size),) * len(spatial)
    if tuple(spatial) == target:
        return x
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return F.interpolate(
        x, size=target, mode=mode, align_corners=False, antialias=len(spatial) == 2
    )
