"""The encoder registry: a name -> patch-encoder factory, each with its preprocessing.

An encoder turns a batch of patches into one embedding per patch. WSI batches arrive as
``uint8`` tensors ``[B, 3, P, P]`` (RGB tiles read at the target resolution); CT batches as
``float32`` tensors ``[B, 1, p, p, p]`` of the preprocessed volume (HU, clipped to
[-1024, 1024], optionally MeD-3D-normalised; axes x, y, z in RAS order). Each encoder owns
the rest of its preprocessing (scaling, colour normalisation, resizing to its input size),
so a tile batch goes in and a ``[B, D]`` float tensor comes out.

Built in:

``handcrafted``
    Needs no weights: colour, stain and texture statistics of WSI tiles; intensity,
    HU-band and texture statistics of CT patches. Fast and vectorised over the batch.
``resnet18``
    MONAI's ResNet-18, 2-D for WSI (ImageNet-style, torchvision key names) and 3-D for CT
    (MedicalNet-style: one input channel, shortcut type A), 512-d pooled features.
``uni``, ``conch``, ``chief``
    Pathology foundation models (UNI ViT-L/16, CONCH ViT-B/16, CHIEF's CTransPath),
    built from their optional packages (``timm``, ``conch``) and a local checkpoint.
``segvol``
    A SegVol-style 3-D ViT image encoder (MONAI ``ViT``) for CT, from a local checkpoint.

Nothing is downloaded at run time: encoders with weights take a local ``checkpoint``
path; random initialisation happens only when ``random_init=True`` is asked for
explicitly (for tests and timing).

    >>> from radiopath.extract.encoders import get_encoder
    >>> enc = get_encoder("handcrafted", "wsi")
    >>> enc.dim
    28

References
----------
.. [1] Ruifrok, A. C. & Johnston, D. A. Quantification of histochemical staining by colour
   deconvolution. Anal. Quant. Cytol. Histol. 23 (2001).
.. [2] Haralick, R. M., Shanmugam, K. & Dinstein, I. Textural features for image
   classification. IEEE Trans. SMC 3 (1973).
.. [3] Chen, S., Ma, K. & Zheng, Y. Med3D: transfer learning for 3D medical image
   analysis. arXiv:1904.00625 (2019).
.. [4] Chen, R. J. et al. Towards a general-purpose foundation model for computational
   pathology (UNI). Nat. Med. 30 (2024).
.. [5] Lu, M. Y. et al. A visual-language foundation model for computational pathology
   (CONCH). Nat. Med. 30 (2024).
.. [6] Wang, X. et al. A pathology foundation model for cancer diagnosis and prognosis
   prediction (CHIEF). Nature 634 (2024).
.. [7] Du, Y. et al. SegVol: universal and interactive volumetric medical image
   segmentation. NeurIPS (2024).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radiopath.errors import RadiopathInputError

log = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------- hand-crafted


def _mean_sd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (population) sd along the last axis, from the first two moments in one pass."""
    mean = x.mean(-1)
    return mean, (x.square().mean(-1) - mean.square()).clamp_min(0.0).sqrt()


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mean, sd, skewness and excess kurtosis along the last axis."""
    mean = x.mean(-1)
    centred = x - mean.unsqueeze(-1)
    var = centred.pow(2).mean(-1)
    sd = var.sqrt()
    z = centred / sd.clamp_min(1e-6).unsqueeze(-1)
    return mean, sd, z.pow(3).mean(-1), z.pow(4).mean(-1) - 3.0


def glcm_features(q: torch.Tensor, levels: int, offsets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Haralick statistics of the grey-level co-occurrence matrix, averaged over offsets.

    For each offset the symmetric, normalised co-occurrence matrix :math:`P(i, j)` of the
    quantised patch is built with one ``scatter_add`` over the whole batch, and [2]_

    .. math::
        \\text{contrast} = \\sum_{ij} P_{ij}(i-j)^2,\\quad
        \\text{homogeneity} = \\sum_{ij} \\frac{P_{ij}}{1+(i-j)^2},\\quad
        \\text{energy} = \\sum_{ij} P_{ij}^2,

        \\text{correlation} = \\sum_{ij} \\frac{(i-\\mu_i)(j-\\mu_j)P_{ij}}{\\sigma_i\\sigma_j},\\quad
        \\text{entropy} = -\\sum_{ij} P_{ij}\\log P_{ij},\\quad
        \\text{dissimilarity} = \\sum_{ij} P_{ij}|i-j|.

    Contrast and dissimilarity are divided by :math:`(L-1)^2` and :math:`L-1` and entropy
    by :math:`\\log L^2`, so every statistic lies in [0, 1] (correlation in [-1, 1]).

    Parameters
    ----------
    q
        ``[B, *spatial]`` integer grey levels in ``[0, levels)``.
    levels
        Number of grey levels :math:`L`.
    offsets
        Non-negative pixel shifts, one per spatial axis each (e.g. ``(0, 1)``, ``(1, 0)``).

    Returns
    -------
    torch.Tensor
        ``[B, 6]``: contrast, dissimilarity, homogeneity, energy, correlation, entropy.
    """
    B = q.shape[0]
    L = levels
    P = torch.zeros(B, L * L, device=q.device, dtype=torch.float32)
    for off in offsets:
        a = q[(slice(None), *(slice(0, q.shape[1 + k] - o) for k, o in enumerate(off)))]
        b = q[(slice(None), *(slice(o, None) for o in off))]
        pair = (a * L + b).reshape(B, -1)
        pair_t = (b * L + a).reshape(B, -1)
        ones = torch.ones_like(pair, dtype=torch.float32)
        P.scatter_add_(1, pair, ones)
        P.scatter_add_(1, pair_t, ones)
    P = P / P.sum(1, keepdim=True).clamp_min(1.0)
    P = P.view(B, L, L)
    idx = torch.arange(L, device=q.device, dtype=torch.float32)
    i, j = idx.view(1, L, 1), idx.view(1, 1, L)
    diff = (i - j).abs()
    contrast = (P * diff.pow(2)).sum((1, 2)) / max((L - 1) ** 2, 1)
    dissim = (P * diff).sum((1, 2)) / max(L - 1, 1)
    homog = (P / (1.0 + diff.pow(2))).sum((1, 2))
    energy = P.pow(2).sum((1, 2))
    mu_i = (P * i).sum((1, 2))
    mu_j = (P * j).sum((1, 2))
    sd_i = (P * (i - mu_i.view(B, 1, 1)).pow(2)).sum((1, 2)).sqrt()
    sd_j = (P * (j - mu_j.view(B, 1, 1)).pow(2)).sum((1, 2)).sqrt()
    cov = (P * (i - mu_i.view(B, 1, 1)) * (j - mu_j.view(B, 1, 1))).sum((1, 2))
    # A flat patch has sd 0: its correlation is undefined; report 1 (perfectly predictable).
    flat = (sd_i * sd_j) < 1e-8
    corr = torch.where(flat, torch.ones_like(cov), cov / (sd_i * sd_j).clamp_min(1e-8))
    entropy = -(P * torch.log(P.clamp_min(1e-12))).sum((1, 2)) / np.log(L * L)
    return torch.stack([contrast, dissim, homog, energy, corr, entropy], dim=1)


def _hed_from_rgb() -> torch.Tensor:
    """Ruifrok-Johnston colour-deconvolution matrix (optical density -> H, E, DAB) [1]_."""
    rgb_from_hed = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
    rgb_from_hed /= np.linalg.norm(rgb_from_hed, axis=1, keepdims=True)
    return torch.tensor(np.linalg.inv(rgb_from_hed), dtype=torch.float32)


WSI_HANDCRAFTED_FEATURES: tuple[str, ...] = (
    "r_mean",
    "g_mean",
    "b_mean",
    "r_sd",
    "g_sd",
    "b_sd",
    "sat_mean",
    "sat_sd",
    "val_mean",
    "val_sd",
    "hue_cos",
    "hue_sin",
    "h_mean",
    "h_sd",
    "e_mean",
    "e_sd",
    "nuclear_fraction",
    "tissue_fraction",
    "grad_mean",
    "grad_sd",
    "laplacian_mean",
    "coarse_sd",
    "glcm_contrast",
    "glcm_dissimilarity",
    "glcm_homogeneity",
    "glcm_energy",
    "glcm_correlation",
    "glcm_entropy",
)

CT_HANDCRAFTED_FEATURES: tuple[str, ...] = (
    "hu_mean",
    "hu_sd",
    "hu_skew",
    "hu_kurtosis",
    "hu_p05",
    "hu_p25",
    "hu_p50",
    "hu_p75",
    "hu_p95",
    "frac_air",
    "frac_lung",
    "frac_fat",
    "frac_soft",
    "frac_enhancing",
    "frac_dense",
    "hist_entropy",
    "grad_mean",
    "grad_sd",
    "laplacian_mean",
    "glcm_contrast",
    "glcm_dissimilarity",
    "glcm_homogeneity",
    "glcm_energy",
    "glcm_correlation",
    "glcm_entropy",
)

#: HU bands whose volume fractions the CT hand-crafted encoder reports.
HU_BANDS: tuple[tuple[float, float], ...] = (
    (-1025.0, -900.0),  # air
    (-900.0, -500.0),  # lung parenchyma
    (-190.0, -30.0),  # fat
    (-30.0, 100.0),  # soft tissue
    (100.0, 300.0),  # contrast-enhancing tissue
    (300.0, 1025.0),  # calcification, bone
)


class HandcraftedWSIEncoder(PatchEncoder):
    """Colour, stain and texture statistics of RGB tiles (no weights, 28 features).

    Per tile, on every other pixel (each axis) of tiles of ``subsample_above`` pixels or more:
    RGB mean and sd; HSV saturation and value mean and sd and the
    saturation-weighted circular mean of hue; haematoxylin and eosin concentration mean
    and sd from Ruifrok-Johnston colour deconvolution of the optical density
    :math:`OD = -\\log_{10}((I + 1) / 256)` [1]_, the fraction of nuclear (high-H) pixels and of
    tissue (OD > 0.15) pixels. At full resolution: grey-level Sobel gradient mean and sd, mean absolute
    Laplacian, the sd of the 4x4-block means (coarse texture); and Haralick statistics of
    the 8-level grey co-occurrence matrix at offsets (0, 1), (1, 0), (1, 1) [2]_.

    Parameters
    ----------
    glcm_levels
        Grey levels of the co-occurrence matrix.
    nuclear_threshold
        Haematoxylin concentration above which a pixel counts as nuclear.
    subsample_above
        Tiles at least this large get their colour statistics from every other pixel.
    """

    name = "handcrafted"
    modality = "wsi"

    def __init__(
        self, glcm_levels: int = 8, nuclear_threshold: float = 0.25, subsample_above: int = 64
    ) -> None:
        super().__init__()
        self.subsample_above = int(subsample_above)
        self.glcm_levels = int(glcm_levels)
        self.nuclear_threshold = float(nuclear_threshold)
        self.dim = len(WSI_HANDCRAFTED_FEATURES)
        self.register_buffer("hed_from_rgb", _hed_from_rgb(), persistent=False)
        grey = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601 luma
        self.register_buffer("grey_weights", grey, persistent=False)

    def config(self) -> dict:
        return {
            **super().config(),
            "glcm_levels": self.glcm_levels,
            "nuclear_threshold": self.nuclear_threshold,
            "subsample_above": self.subsample_above,
        }

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        return _as_float_rgb(batch)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        B = rgb.shape[0]
        # Colour and stain statistics are estimated on every other pixel of large tiles
        # (a 4x smaller, unbiased sample); texture is measured on every pixel.
        colour = rgb[..., ::2, ::2] if min(rgb.shape[-2:]) >= self.subsample_above else rgb
        flat = colour.flatten(2)  # [B, 3, n]
        rgb_mean, rgb_sd = _mean_sd(flat)
        mx, mn = flat.amax(1), flat.amin(1)
        sat = (mx - mn) / mx.clamp_min(1e-6)
        r, g, b = flat.unbind(1)
        hue = torch.atan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)
        w = sat / sat.sum(-1, keepdim=True).clamp_min(1e-6)
        hue_cos, hue_sin = (w * torch.cos(hue)).sum(-1), (w * torch.sin(hue)).sum(-1)
        od = torch.log10((flat * 255.0 + 1.0) / 256.0).neg_()  # [B, 3, n]
        stains = torch.einsum("bcn,cs->bsn", od, self.hed_from_rgb)
        h, e = stains[:, 0], stains[:, 1]
        nuclear = (h > self.nuclear_threshold).float().mean(-1)
        tissue = (od.sum(1) > 0.15).float().mean(-1)

        grey = torch.einsum("bchw,c->bhw", rgb, self.grey_weights)
        # Sobel (separable: smooth across, difference along) and 4-neighbour Laplacian on the
        # edge-replicated tile; slicing is much faster than 1-channel convolutions on CPU.
        p = F.pad(grey.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
        across = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]
        along = p[:, :, :-2] + 2.0 * p[:, :, 1:-1] + p[:, :, 2:]
        gx = (across[:, :, 2:] - across[:, :, :-2]) / 8.0
        gy = (along[:, 2:] - along[:, :-2]) / 8.0
        grad = (gx.square() + gy.square()).sqrt_().flatten(1)
        centre = p[:, 1:-1, 1:-1]
        lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4.0 * centre
        lap = lap.abs().flatten(1).mean(-1)
        k = 4 if min(grey.shape[-2:]) >= 8 else 1
        coarse = _mean_sd(F.avg_pool2d(grey.unsqueeze(1), k).flatten(1))[1]
        L = self.glcm_levels
        q = (grey * L).long().clamp_(0, L - 1)
        glcm = glcm_features(q, L, [(0, 1), (1, 0), (1, 1)])
        stats = [_mean_sd(sat), _mean_sd(mx), _mean_sd(h), _mean_sd(e), _mean_sd(grad)]
        (sat_m, sat_sd), (val_m, val_sd), (h_m, h_sd), (e_m, e_sd), (g_m, g_sd) = stats
        feats = torch.cat(
            [
                rgb_mean,
                rgb_sd,
                torch.stack(
                    [
                        sat_m,
                        sat_sd,
                        val_m,
                        val_sd,
                        hue_cos,
                        hue_sin,
                        h_m,
                        h_sd,
                        e_m,
                        e_sd,
                        nuclear,
                        tissue,
                        g_m * 4.0,
                        g_sd * 4.0,
                        lap * 4.0,
                        coarse * 4.0,
                    ],
                    dim=1,
                ),
                glcm,
            ],
            dim=1,
        )
        return feats.view(B, self.dim)


class HandcraftedCTEncoder(PatchEncoder):
    """Intensity, HU-band and texture statistics of CT patches (no weights, 25 features).

    Per patch (HU, clipped to [-1024, 1024]; reported in hundreds of HU so the features
    are of order one): mean, sd, skewness, excess kurtosis, the 5th/25th/50th/75th/95th
    percentiles; the volume fractions of air, lung, fat, soft tissue, enhancing tissue and
    dense (calcified/bone) voxels (:data:`HU_BANDS`); the entropy of the 32-bin histogram
    over [-1024, 1024]; 3-D central-difference gradient magnitude mean and sd, mean absolute
    Laplacian; Haralick statistics of the 16-level co-occurrence matrix over the soft-tissue
    window [-160, 240] HU at offsets along x, y and z [2]_.

    Expects HU input (``ct_normalisation = "none"``).
    """

    name = "handcrafted"
    modality = "ct"
    ct_normalisation = "none"

    def __init__(self, glcm_levels: int = 16, glcm_window: tuple[float, float] = (-160.0, 240.0)):
        super().__init__()
        self.glcm_levels = int(glcm_levels)
        self.glcm_window = (float(glcm_window[0]), float(glcm_window[1]))
        self.dim = len(CT_HANDCRAFTED_FEATURES)
        self.register_buffer(
            "quantiles", torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95]), persistent=False
        )

    def config(self) -> dict:
        return {
            **super().config(),
            "glcm_levels": self.glcm_levels,
            "glcm_window": list(self.glcm_window),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vol = x[:, 0].float()  # [B, X, Y, Z] in HU
        B = vol.shape[0]
        flat = vol.flatten(1)
        mean, sd, skew, kurt = _moments(flat)
        q = torch.quantile(flat, self.quantiles, dim=1).T  # [B, 5]
        bands = torch.stack(
            [((flat >= lo) & (flat < hi)).float().mean(-1) for lo, hi in HU_BANDS], dim=1
        )
        nb = 32
        bins = ((flat - HU_RANGE[0]) / (HU_RANGE[1] - HU_RANGE[0]) * nb).long().clamp_(0, nb - 1)
        hist = torch.zeros(B, nb, device=vol.device).scatter_add_(1, bins, torch.ones_like(flat))
        hist = hist / hist.sum(1, keepdim=True)
        hist_entropy = -(hist * torch.log(hist.clamp_min(1e-12))).sum(1) / np.log(nb)
        pad = F.pad(vol.unsqueeze(1), (1, 1, 1, 1, 1, 1), mode="replicate")[:, 0]
        gx = (pad[:, 2:, 1:-1, 1:-1] - pad[:, :-2, 1:-1, 1:-1]) / 2
        gy = (pad[:, 1:-1, 2:, 1:-1] - pad[:, 1:-1, :-2, 1:-1]) / 2
        gz = (pad[:, 1:-1, 1:-1, 2:] - pad[:, 1:-1, 1:-1, :-2]) / 2
        grad = (gx.pow(2) + gy.pow(2) + gz.pow(2)).sqrt().flatten(1)
        lap = (
            (
                pad[:, 2:, 1:-1, 1:-1]
                + pad[:, :-2, 1:-1, 1:-1]
                + pad[:, 1:-1, 2:, 1:-1]
                + pad[:, 1:-1, :-2, 1:-1]
                + pad[:, 1:-1, 1:-1, 2:]
                + pad[:, 1:-1, 1:-1, :-2]
                - 6 * vol
            )
            .abs()
            .flatten(1)
            .mean(-1)
        )
        lo, hi = self.glcm_window
        L = self.glcm_levels
        ql = ((vol - lo) / (hi - lo) * L).floor().long().clamp_(0, L - 1)
        glcm = glcm_features(ql, L, [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
        hu = 0.01  # report HU-valued statistics in hundreds of HU
        feats = torch.cat(
            [
                torch.stack([mean * hu, sd * hu, skew, kurt], 1),
                q * hu,
                bands,
                torch.stack(
                    [hist_entropy, grad.mean(-1) * hu, grad.std(-1, unbiased=False) * hu, lap * hu],
                    1,
                ),
                glcm,
            ],
            dim=1,
        )
        return feats.view(B, self.dim)


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


# --------------------------------------------------------------------------- ResNet-18


class ResNet18Encoder(PatchEncoder):
    """MONAI ResNet-18 up to global average pooling: 512-d features.

    WSI (2-D): three input channels, 7x7 stride-2 stem as torchvision's ResNet-18, so an
    ImageNet state dict (torchvision key names) loads as it is; tiles are scaled to [0, 1]
    and normalised with ImageNet mean and sd. CT (3-D): MedicalNet-style [3]_, one input
    channel, shortcut type A, MeD-3D intensity normalisation, cubes fed depth first.

    Parameters
    ----------
    modality
        ``"wsi"`` (2-D) or ``"ct"`` (3-D).
    checkpoint
        Local state dict (``fc`` / ``conv_seg`` heads are ignored); None leaves the random
        initialisation (only via ``get_encoder(..., random_init=True)``).
    input_size
        Resize patches to this side before the network (None: as read).
    """

    name = "resnet18"

    def __init__(
        self,
        modality: str = "wsi",
        checkpoint: str | os.PathLike | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        from monai.networks.nets import resnet18

        self.modality = modality
        self.spatial_dims = 2 if modality == "wsi" else 3
        self.ct_normalisation = "med3d"
        self.dim = 512
        self.input_size = input_size
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.model = resnet18(
            spatial_dims=self.spatial_dims,
            n_input_channels=3 if modality == "wsi" else 1,
            conv1_t_stride=2,
            shortcut_type="B" if modality == "wsi" else "A",
            feed_forward=False,
            pretrained=False,
        )
        if checkpoint is not None:
            load_weights(self.model, load_checkpoint(checkpoint), path=checkpoint, ignore=("fc.",))
        self.eval()

    def config(self) -> dict:
        return {
            **super().config(),
            "checkpoint": _file_identity(self.checkpoint),
            "input_size": self.input_size,
        }

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        if self.modality == "wsi":
            return _resize(
                _normalise_rgb(_as_float_rgb(batch), IMAGENET_MEAN, IMAGENET_STD), self.input_size
            )
        # MedicalNet reads volumes depth first (z, y, x), as nibabel arrays transposed.
        return _resize(batch.float().permute(0, 1, 4, 3, 2), self.input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------- foundation models


class UNIEncoder(PatchEncoder):
    """UNI (ViT-L/16 trained with DINOv2 on 100k slides) [4]_: 1024-d class token.

    Built with ``timm`` exactly as its model card describes and loaded strictly from the
    local ``pytorch_model.bin``. Tiles are resized to 224 and ImageNet-normalised
    (UNI expects 224 px tiles at 20x, about 0.5 um per pixel).
    """

    name = "uni"
    modality = "wsi"

    def __init__(self, modality: str = "wsi", checkpoint: str | os.PathLike | None = None) -> None:
        super().__init__()
        import timm

        self.dim = 1024
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.model = timm.create_model(
            "vit_large_patch16_224",
            img_size=224,
            patch_size=16,
            init_values=1e-5,
            num_classes=0,
            dynamic_img_size=True,
            pretrained=False,
        )
        if checkpoint is not None:
            load_weights(
                self.model, load_checkpoint(checkpoint), path=checkpoint, ignore=("head.",)
            )
        self.eval()

    def config(self) -> dict:
        return {**super().config(), "checkpoint": _file_identity(self.checkpoint)}

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        return _normalise_rgb(_resize(_as_float_rgb(batch), 224), IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class CONCHEncoder(PatchEncoder):
    """CONCH's image tower (ViT-B/16, vision-language pretraining) [5]_: 512-d features.

    Built with the ``conch`` package (``create_model_from_pretrained("conch_ViT-B-16",
    checkpoint_path=...)``, a local file) and ``encode_image(x, proj_contrast=False,
    normalize=False)``, the setting its authors use for slide-level tasks. Tiles are resized
    to 448 and normalised with the OpenAI CLIP constants.
    """

    name = "conch"
    modality = "wsi"

    def __init__(self, modality: str = "wsi", checkpoint: str | os.PathLike | None = None) -> None:
        super().__init__()
        from conch.open_clip_custom import create_model, create_model_from_pretrained

        self.dim = 512
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        if checkpoint is not None:
            self.model, _ = create_model_from_pretrained(
                "conch_ViT-B-16", checkpoint_path=str(checkpoint)
            )
        else:
            self.model = create_model("conch_ViT-B-16")
        self.eval()

    def config(self) -> dict:
        return {**super().config(), "checkpoint": _file_identity(self.checkpoint)}

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        return _normalise_rgb(_resize(_as_float_rgb(batch), 448), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x, proj_contrast=False, normalize=False)


class ConvStem(nn.Module):
    """CTransPath's convolutional stem (replaces Swin's 4x4 patch embedding) [6]_.

    Two stride-2 3x3 convolutions with batch norm and ReLU, then a 1x1 projection to
    ``embed_dim``; returns NHWC tokens as timm's Swin Transformer expects.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable | None = None,
        **_: object,
    ) -> None:
        super().__init__()
        if patch_size != 4 or embed_dim % 8:
            raise ValueError("ConvStem needs patch_size 4 and embed_dim divisible by 8")
        size = img_size if isinstance(img_size, Sequence) else (img_size, img_size)
        self.img_size = tuple(size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers: list[nn.Module] = []
        c_in, c_out = in_chans, embed_dim // 8
        for _ in range(2):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in, c_out = c_out, c_out * 2
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class CHIEFEncoder(PatchEncoder):
    """CHIEF's patch encoder, CTransPath (Swin-T with a convolutional stem) [6]_: 768-d.

    Built with ``timm`` (``swin_tiny_patch4_window7_224`` with :class:`ConvStem`). The
    released ``CHIEF_CTransPath.pth`` was saved with timm 0.5.4, where each stage's patch
    merging sat at the end of the stage; recent timm puts it at the start of the next, so
    ``layers.{k}.downsample`` is renamed ``layers.{k+1}.downsample`` on loading. Tiles are
    resized to 224 and ImageNet-normalised.
    """

    name = "chief"
    modality = "wsi"

    def __init__(self, modality: str = "wsi", checkpoint: str | os.PathLike | None = None) -> None:
        super().__init__()
        import timm

        self.dim = 768
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.model = timm.create_model(
            "swin_tiny_patch4_window7_224", embed_layer=ConvStem, pretrained=False, num_classes=0
        )
        if checkpoint is not None:
            state = {}
            for key, value in load_checkpoint(checkpoint).items():
                if "relative_position_index" in key or "attn_mask" in key:
                    continue  # buffers rebuilt by the model
                parts = key.split(".")
                if len(parts) > 2 and parts[0] == "layers" and parts[2] == "downsample":
                    parts[1] = str(int(parts[1]) + 1)
                state[".".join(parts)] = value
            load_weights(self.model, state, path=checkpoint, ignore=("head.",))
        self.eval()

    def config(self) -> dict:
        return {**super().config(), "checkpoint": _file_identity(self.checkpoint)}

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        return _normalise_rgb(_resize(_as_float_rgb(batch), 224), IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out.mean(dim=(1, 2)) if out.ndim == 4 else out


class SegVolEncoder(PatchEncoder):
    """A SegVol-style CT encoder: MONAI's 3-D ViT image encoder, mean-pooled tokens [7]_.

    SegVol's image encoder is a ViT-B (12 layers, 768 wide, 12 heads, MLP 3072) over
    ``(32, 256, 256)`` depth-first volumes cut into ``(4, 16, 16)`` patches with a linear
    ("perceptron") patch embedding. Patches arrive as ``[B, 1, x, y, z]`` RAS HU volumes;
    they are made depth-first (z, y, x), scaled from [-1024, 1024] HU to [0, 1] and resized to
    ``img_size``. A checkpoint's keys under ``image_encoder.`` are used (SegVol's full model
    wraps the encoder); when its position-embedding grid differs from ``img_size`` it is
    interpolated trilinearly.

    Parameters
    ----------
    img_size, patch_size
        ViT input and token sizes (depth, height, width).
    hidden_size, mlp_dim, num_layers, num_heads
        ViT width and depth (SegVol's defaults).
    """

    name = "segvol"
    modality = "ct"
    ct_normalisation = "none"

    def __init__(
        self,
        modality: str = "ct",
        checkpoint: str | os.PathLike | None = None,
        img_size: Sequence[int] = (32, 256, 256),
        patch_size: Sequence[int] = (4, 16, 16),
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
    ) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        self.img_size = tuple(int(s) for s in img_size)
        self.patch_size = tuple(int(s) for s in patch_size)
        self.dim = int(hidden_size)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.model = ViT(
            in_channels=1,
            img_size=self.img_size,
            patch_size=self.patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type="perceptron",
            classification=False,
            spatial_dims=3,
        )
        if checkpoint is not None:
            state = load_checkpoint(checkpoint)
            marker = "image_encoder."
            if any(marker in k for k in state):
                state = {k.split(marker, 1)[1]: v for k, v in state.items() if marker in k}
            key = "patch_embedding.position_embeddings"
            own = self.model.state_dict()[key]
            if key in state and state[key].shape != own.shape:
                state[key] = self._interpolate_positions(state[key], state_path=checkpoint)
            load_weights(self.model, state, path=checkpoint)
        self.eval()

    def _interpolate_positions(self, pos: torch.Tensor, state_path) -> torch.Tensor:
        """Resample a ``[1, n, C]`` learnt position grid to this model's token grid."""
        grid = tuple(i // p for i, p in zip(self.img_size, self.patch_size))
        n, c = pos.shape[-2], pos.shape[-1]
        for src in ((8, 16, 16), (n, 1, 1)):
            if int(np.prod(src)) == n:
                break
        else:  # pragma: no cover - (n, 1, 1) always matches
            raise RadiopathInputError("cannot infer the position grid", path=state_path)
        vol = pos.reshape(1, *src, c).permute(0, 4, 1, 2, 3)
        vol = F.interpolate(vol, size=grid, mode="trilinear", align_corners=False)
        return vol.permute(0, 2, 3, 4, 1).reshape(1, -1, c)

    def config(self) -> dict:
        return {
            **super().config(),
            "checkpoint": _file_identity(self.checkpoint),
            "img_size": list(self.img_size),
            "patch_size": list(self.patch_size),
        }

    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().permute(0, 1, 4, 3, 2)  # x, y, z -> z, y, x (depth first)
        x = (x.clamp(*HU_RANGE) - HU_RANGE[0]) / (HU_RANGE[1] - HU_RANGE[0])
        return _resize(x, self.img_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.model(x)
        return tokens.mean(1)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry.

    Attributes
    ----------
    name
        Registry key.
    factory
        ``factory(modality, checkpoint=..., **kwargs) -> PatchEncoder``.
    modalities
        The modalities it encodes.
    requires
        Optional packages (import names) it needs, with the pip name after a colon when it
        differs (``"conch:git+https://github.com/mahmoodlab/CONCH"``).
    weights
        ``"none"`` (no weights), ``"checkpoint"`` (a local checkpoint is required unless
        random initialisation is asked for).
    description
        One line for listings.
    """

    name: str
    factory: Callable[..., PatchEncoder]
    modalities: tuple[str, ...]
    requires: tuple[str, ...] = ()
    weights: str = "checkpoint"
    description: str = ""

    def missing_packages(self) -> list[str]:
        out = []
        for req in self.requires:
            module, _, pip_name = req.partition(":")
            if importlib.util.find_spec(module) is None:
                out.append(f"'{module}' (pip install {pip_name or module})")
        return out


ENCODERS: dict[str, EncoderSpec] = {}


def register_encoder(spec: EncoderSpec) -> EncoderSpec:
    """Add an encoder to the registry (a later entry with the same name replaces it)."""
    ENCODERS[spec.name] = spec
    return spec


def available_encoders(modality: str | None = None) -> list[str]:
    """Registered encoder names, optionally only those that encode ``modality``."""
    return sorted(n for n, s in ENCODERS.items() if modality is None or modality in s.modalities)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The registry entry of ``name``; an unknown name raises, listing the known ones."""
    spec = ENCODERS.get(str(name).lower())
    if spec is None:
        raise RadiopathInputError(
            f"unknown encoder {name!r}; known encoders: {', '.join(available_encoders())}",
            field="encoder",
        )
    return spec


def get_encoder(
    name: str,
    modality: str,
    *,
    checkpoint: str | os.PathLike | None = None,
    random_init: bool = False,
    device: str | torch.device = "cpu",
    **kwargs,
) -> PatchEncoder:
    """Build a registered encoder for one modality, in eval mode on ``device``.

    Parameters
    ----------
    name
        Registry key (see :func:`available_encoders`).
    modality
        ``"wsi"`` or ``"ct"``.
    checkpoint
        Local weights file for encoders that need weights.
    random_init
        Build an encoder that needs weights without them (random initialisation); for
        tests and timing only, never for results.
    device
        Torch device.
    **kwargs
        Passed to the encoder's constructor (e.g. ``input_size``, ``img_size``).

    Raises
    ------
    RadiopathInputError
        Unknown name (the message lists the known ones), a modality the encoder does not
        encode, missing optional packages, a missing or unreadable checkpoint -- each named.
    """
    spec = get_encoder_spec(name)
    if modality not in spec.modalities:
        raise RadiopathInputError(
            f"encoder {spec.name!r} does not encode {modality!r} patches (it encodes "
            f"{', '.join(spec.modalities)}); encoders for {modality}: "
            f"{', '.join(available_encoders(modality))}",
            field="encoder",
        )
    problems = []
    missing = spec.missing_packages()
    if missing:
        problems.append("the optional package(s) " + ", ".join(missing) + " are not installed")
    if spec.weights == "checkpoint":
        if checkpoint is None and not random_init:
            problems.append(
                "no checkpoint was given: pass a local weights file (checkpoint=PATH, "
                "--checkpoint PATH); nothing is downloaded at run time"
            )
        elif checkpoint is not None and not Path(checkpoint).is_file():
            problems.append(f"checkpoint file '{checkpoint}' does not exist")
    elif checkpoint is not None:
        log.warning("encoder %r takes no weights; ignoring checkpoint %s", spec.name, checkpoint)
        checkpoint = None
    if problems:
        raise RadiopathInputError(
            f"encoder {spec.name!r} for {modality} cannot be built: " + "; ".join(problems),
            path=checkpoint,
            field="encoder",
        )
    if spec.weights == "checkpoint" and checkpoint is None:
        log.warning(
            "encoder %r for %s uses random weights (random_init=True): for tests and timing only",
            spec.name,
            modality,
        )
    try:
        encoder = spec.factory(modality, checkpoint=checkpoint, **kwargs)
    except TypeError as exc:
        if kwargs and "argument" in str(exc):
            raise RadiopathInputError(
                f"encoder {spec.name!r} does not take option(s) {sorted(kwargs)} ({exc})",
                field="encoder",
            ) from exc
        raise
    return encoder.to(resolve_device(device)).eval()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise RadiopathInputError(f"unknown device {device!r} ({exc})", field="device") from exc


def _file_identity(path: str | None) -> dict | None:
    """Path, size and modification time of a weights file (identifies it cheaply)."""
    if path is None:
        return None
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}


def _handcrafted(modality: str, checkpoint=None, **kwargs) -> PatchEncoder:
    return HandcraftedWSIEncoder(**kwargs) if modality == "wsi" else HandcraftedCTEncoder(**kwargs)


register_encoder(
    EncoderSpec(
        "handcrafted",
        _handcrafted,
        ("wsi", "ct"),
        weights="none",
        description="colour/stain/texture (WSI) and intensity/HU-band/texture (CT) statistics; no weights",
    )
)
register_encoder(
    EncoderSpec(
        "resnet18",
        ResNet18Encoder,
        ("wsi", "ct"),
        description="MONAI ResNet-18: 2-D ImageNet-style (WSI), 3-D MedicalNet-style (CT); local weights",
    )
)
register_encoder(
    EncoderSpec(
        "uni",
        UNIEncoder,
        ("wsi",),
        requires=("timm",),
        description="UNI ViT-L/16 pathology foundation model (timm); local pytorch_model.bin",
    )
)
register_encoder(
    EncoderSpec(
        "conch",
        CONCHEncoder,
        ("wsi",),
        requires=("conch:git+https://github.com/mahmoodlab/CONCH",),
        description="CONCH ViT-B/16 image tower (conch package); local checkpoint",
    )
)
register_encoder(
    EncoderSpec(
        "chief",
        CHIEFEncoder,
        ("wsi",),
        requires=("timm",),
        description="CHIEF CTransPath (Swin-T + conv stem, timm); local CHIEF_CTransPath.pth",
    )
)
register_encoder(
    EncoderSpec(
        "segvol",
        SegVolEncoder,
        ("ct",),
        requires=("einops",),
        description="SegVol-style 3-D ViT-B CT image encoder (MONAI ViT, einops); local checkpoint",
    )
)
