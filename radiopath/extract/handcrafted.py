"""The hand-crafted encoders, vectorised over the batch and needing no weights.

Colour, stain and texture statistics of WSI tiles (:class:`HandcraftedWSIEncoder`);
intensity, HU-band and texture statistics of CT patches (:class:`HandcraftedCTEncoder`).

The numbered references ([1]_ ...) are listed in :mod:`radiopath.extract.encoders`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from radiopath.extract.patch_encoder import HU_RANGE, PatchEncoder, _as_float_rgb

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
