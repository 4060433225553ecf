"""The embedded synthetic cohort: patch embeddings with a planted, spatially local signal.

Each patient has a WSI bag (2-D patch grid over a tissue-shaped region) and a CT bag (3-D
patch grid inside a lumpy tumour volume). A latent prognostic factor ``z`` per patient
drives the hazard (proportional hazards, exponential baseline) and shows itself only in a
few spatially contiguous *planted regions*: a marked tissue (a shift along a fixed marker
direction ``u``) whose patch embeddings are also shifted along a hidden direction ``w`` by
an amount that grows with ``z``. Everything else -- the tissue-type structure, the noise,
the bag size, the clinical columns apart from a weak stage variable -- carries no signal.

By default the cohort is *confounded*, so that averaging is not enough:

* a patient-level offset along the same direction ``w`` on *every* patch of a bag (a
  scanner- or stain-like effect, ``confounder``: its standard deviation), which moves the
  bag mean more than the small planted region does;
* a *decoy* region per bag: another marked tissue (direction ``u2``) shifted along ``w`` by
  the same amounts, drawn independently of the outcome;
* a planted extent that does not depend on ``z`` (``extent_signal=False``), so the size of
  the region says nothing either.

A model that finds the planted regions, and reads them against the rest of the bag, can
predict survival; one that averages them with the rest of the bag cannot. The ceilings
(C-index of the true risk, of an oracle Cox model on the planted regions' mean and of one
on the bag mean, 5-fold) are written beside the truth in ``ceilings.json``.

The cohort is written in the contract of ``INTERFACE.md`` (HDF5 embedding files and a
cohort CSV); the ground truth (per-patch planted masks, the true linear predictor) goes to
separate files under ``truth/`` so tests and benchmarks can check that a model recovers it.

    >>> from radiopath.datasets import make_synthetic_cohort
    >>> cohort_csv = make_synthetic_cohort("synthetic", n_patients=40, seed=0)
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree
from scipy.special import ndtr
from tqdm.auto import tqdm

from radiopath.ceilings import cohort_ceilings
from radiopath.ceilings import cross_validated_cox_c as cross_validated_cox_c
from radiopath.errors import RadiopathInputError
from radiopath.io import EmbeddingBag, write_embeddings

log = logging.getLogger(__name__)

SIGNAL_PLACEMENTS = ("wsi", "ct", "both", "split")
REGION_SHAPES = ("ball", "elongated", "scattered")
#: Shape parameters of the non-default region shapes: how many times longer than wide an
#: ``"elongated"`` region is, and into how many foci a ``"scattered"`` region breaks.
ELONGATION, FOCI = 4.0, 6
MODALITIES = ("wsi", "ct")


@dataclass
class SyntheticConfig:
    """Parameters of the synthetic cohort (all deterministic given ``seed``).

    Attributes
    ----------
    n_patients
        Number of patients P.
    dim
        Embedding width of the WSI bags; ``ct_dim`` that of the CT bags (default: ``dim``).
    wsi_patches, ct_patches
        (min, max) patch counts per bag, drawn uniformly.
    signal
        Where the prognostic signal lives: ``"wsi"``, ``"ct"``, ``"both"`` (the same
        latent factor visible in each) or ``"split"`` (two independent factors, one per
        modality, both driving the hazard).
    effect
        Log-hazard ratio per standard deviation of the latent factor.
    shift
        Size of the planted shift along the hidden direction, in units of the per-dimension
        noise standard deviation (scaled by 0.5 to 1.5 with the factor's quantile).
    extent
        (min, max) fraction of a bag's patches that are planted; a patient's fraction grows
        with its latent factor.
    n_regions
        (min, max) number of contiguous planted regions per bag.
    region_shape
        Shape of each planted (and decoy) region: ``"ball"`` (the default: the patches
        nearest a random seed, a disc on a slide and a ball in a CT volume),
        ``"elongated"`` (the nearest patches under a metric that shrinks distances along a
        random axis by 4, a band such as a tumour front or a vessel wall) or
        ``"scattered"`` (six small balls anywhere in the bag, a multifocal pattern such as
        tumour budding or lymphoid aggregates).
    censoring
        Target fraction of censored patients (independent exponential censoring).
    missing_rate
        Probability that a patient lacks one of the two modalities (never both).
    clinical
        Add clinical columns: ``age`` and ``sex`` (pure noise) and ``stage`` (1-4, weakly
        related to the hazard, as a real stage would be).
    clinical_effect
        Log-hazard ratio per standard deviation of a third latent factor, independent of the
        imaging ones and seen only in two clinical columns: ``marker`` (a numeric reading of
        it with noise of standard deviation 0.5, like a laboratory value) and ``grade``
        (``G1``-``G4``, a coarse ordinal reading). 0 (the default): no such factor and no such
        columns. It is drawn from its own random stream, so the rest of the cohort is the
        one drawn without it, apart from the outcomes.
    n_tissue_types
        Spatial tissue-type structure (Voronoi regions with their own mean embedding),
        independent of the outcome.
    marker
        Shift of the planted (and decoy) patches along their marker direction, in noise
        standard deviations: how recognisable the marked tissue is, whatever the outcome.
    confounder
        Standard deviation of the patient-level offset along ``w`` added to every patch of a
        bag (drawn per bag), in noise standard deviations; 0 for none.
    decoy
        Add a non-prognostic decoy region per bag (marker ``u2``, shift along ``w`` drawn
        independently of the outcome).
    extent_signal
        The planted fraction grows with the latent factor (True) or is drawn independently
        of it (False, the default: then only the planted shift carries the signal).
    """

    n_patients: int = 60
    dim: int = 32
    ct_dim: int | None = None
    wsi_patches: tuple[int, int] = (1000, 3000)
    ct_patches: tuple[int, int] = (500, 1500)
    signal: str = "both"
    effect: float = 2.0
    shift: float = 2.0
    extent: tuple[float, float] = (0.04, 0.2)
    n_regions: tuple[int, int] = (1, 2)
    region_shape: str = "ball"
    censoring: float = 0.3
    missing_rate: float = 0.0
    clinical: bool = True
    clinical_effect: float = 0.0
    n_tissue_types: int = 4
    marker: float = 1.5
    confounder: float = 0.5
    decoy: bool = True
    extent_signal: bool = False
    wsi_patch_size: int = 256
    wsi_mpp: float = 0.5
    ct_patch_size: int = 8
    ct_spacing: tuple[float, float, float] = (0.8, 0.8, 2.5)
    baseline_hazard: float = 0.02
    seed: int = 0

    def validate(self) -> None:
        def bad(field, message):
            raise RadiopathInputError(message, field=field)

        if self.n_patients < 4:
            bad("n_patients", f"need at least 4 patients, got {self.n_patients}")
        if self.dim < 2 or (self.ct_dim is not None and self.ct_dim < 2):
            bad("dim", "embedding width must be at least 2")
        for name in ("wsi_patches", "ct_patches"):
            lo, hi = getattr(self, name)
            if not 16 <= lo <= hi:
                bad(name, f"need 16 <= min <= max, got ({lo}, {hi})")
        if self.signal not in SIGNAL_PLACEMENTS:
            bad("signal", f"expected one of {SIGNAL_PLACEMENTS}, got {self.signal!r}")
        if self.region_shape not in REGION_SHAPES:
            bad("region_shape", f"expected one of {REGION_SHAPES}, got {self.region_shape!r}")
        if not 0.0 <= self.censoring < 0.95:
            bad("censoring", f"must be in [0, 0.95), got {self.censoring}")
        if not 0.0 <= self.missing_rate <= 1.0:
            bad("missing_rate", f"must be in [0, 1], got {self.missing_rate}")
        lo, hi = self.extent
        if not 0.0 < lo <= hi < 1.0:
            bad("extent", f"need 0 < min <= max < 1, got {self.extent}")
        if self.decoy and hi >= 0.5:
            bad("extent", f"a decoy region needs max extent < 0.5, got {self.extent}")
        if self.confounder < 0:
            bad("confounder", f"must be >= 0, got {self.confounder}")
        if self.marker < 0:
            bad("marker", f"must be >= 0, got {self.marker}")
        if self.clinical_effect < 0:
            bad("clinical_effect", f"must be >= 0, got {self.clinical_effect}")
        if self.clinical_effect > 0 and not self.clinical:
            bad("clinical_effect", "a clinical factor needs clinical columns (clinical=True)")


# ------------------------------------------------------------------ geometry


def _tissue_mask_2d(rng: np.random.Generator, res: int) -> np.ndarray:
    """A tissue-like blob: union of a few rotated ellipses on a ``res x res`` grid."""
    yy, xx = np.mgrid[0:res, 0:res] / res
    mask = np.zeros((res, res), dtype=bool)
    for _ in range(rng.integers(2, 5)):
        cx, cy = rng.uniform(0.3, 0.7, size=2)
        a, b = rng.uniform(0.12, 0.3), rng.uniform(0.08, 0.2)
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        mask |= (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return mask


def _tumour_mask_3d(rng: np.random.Generator, res: int) -> np.ndarray:
    """A lumpy ellipsoid: radius modulated by a few random low-frequency harmonics."""
    g = (np.arange(res) + 0.5) / res - 0.5
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    axes = rng.uniform(0.3, 0.45, size=3)
    r = np.sqrt((x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2) + 1e-9
    theta, phi = np.arccos(np.clip(z / axes[2] / r, -1, 1)), np.arctan2(y, x)
    bump = np.zeros_like(r)
    for _ in range(3):
        degree, order = rng.integers(1, 4), rng.integers(0, 3)
        bump += (
            rng.uniform(0.03, 0.1)
            * np.cos(degree * theta)
            * np.cos(order * phi + rng.uniform(0, 6.28))
        )
    return r <= 1.0 + bump


def _grid_points(rng: np.random.Generator, n_target: int, ndim: int) -> np.ndarray:
    """Integer grid cells inside a random tissue (2-D) or tumour (3-D) shape, about n_target."""
    shape_fn = _tissue_mask_2d if ndim == 2 else _tumour_mask_3d
    probe_res = 64 if ndim == 2 else 24
    state = rng.bit_generator.state
    fill = max(shape_fn(rng, probe_res).mean(), 1e-3)
    rng.bit_generator.state = state  # the same shape again, at the final resolution
    res = max(4, int(round((n_target / fill) ** (1.0 / ndim))))
    mask = shape_fn(rng, res)
    cells = np.argwhere(mask)
    if len(cells) == 0:  # pragma: no cover - the shapes always cover the centre
        cells = np.argwhere(np.ones((4,) * ndim, dtype=bool))
    # (row, col[, slice]) -> (x, y[, z])
    cells = cells[:, ::-1] if ndim == 2 else cells
    return cells.astype(np.int64)


def _contiguous_regions(
    rng: np.random.Generator,
    points: np.ndarray,
    n_planted: int,
    n_regions: int,
    exclude: np.ndarray | None = None,
    shape: str = "ball",
) -> np.ndarray:
    """A boolean mask of ``n_planted`` patches in ``n_regions`` regions of the given
    ``shape`` (see :class:`SyntheticConfig`; a ``"scattered"`` region is ``FOCI`` small
    contiguous balls, the other shapes one contiguous piece each), avoiding the patches in
    ``exclude``. ``"ball"`` draws exactly the random numbers it always has."""
    taken = np.zeros(len(points), dtype=bool) if exclude is None else exclude.copy()
    mask = np.zeros(len(points), dtype=bool)
    if shape == "scattered":
        n_regions *= FOCI
    tree = None if shape == "elongated" else cKDTree(points)  # elongated: its own metric
    sizes = np.full(n_regions, n_planted // n_regions)
    sizes[: n_planted % n_regions] += 1
    for size in sizes:
        if size == 0:
            continue
        free_points = np.flatnonzero(~taken)
        if len(free_points) == 0:
            break
        seed = points[free_points[rng.integers(len(free_points))]]
        k = min(len(points), int(size) + int(taken.sum()))
        if shape == "elongated":
            axis = rng.normal(size=points.shape[1])
            axis /= np.linalg.norm(axis)
            # Shrink every offset's component along the axis: the nearest points then lie
            # in an ellipse (ellipsoid) ELONGATION times longer along the axis than across.
            offsets = points - seed
            offsets -= (1.0 - 1.0 / ELONGATION) * np.outer(offsets @ axis, axis)
            idx = np.argsort(np.einsum("ij,ij->i", offsets, offsets), kind="stable")[:k]
        else:
            _, idx = tree.query(seed, k=k)
        idx = np.atleast_1d(idx)
        free = idx[~taken[idx]][:size]
        mask[free] = True
        taken[free] = True
    return mask


# ------------------------------------------------------------------ embeddings


@dataclass
class _Directions:
    """Hidden directions of one modality: signal ``w``, markers ``u`` (planted) and ``u2``
    (decoy), orthonormal (with ``dim < 3`` the markers share what is left), and the
    tissue-type means, which carry nothing along ``w``."""

    w: np.ndarray
    u: np.ndarray
    u2: np.ndarray
    tissue: np.ndarray


def _hidden_directions(rng: np.random.Generator, dim: int, n_tissue: int) -> _Directions:
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    w = basis[:, 0]
    tissue = rng.normal(size=(n_tissue, dim)) * 1.0
    tissue -= np.outer(tissue @ w, w)  # tissue structure carries nothing along w
    return _Directions(w, basis[:, min(1, dim - 1)], basis[:, min(2, dim - 1)], tissue)


def _make_bag(
    rng: np.random.Generator,
    *,
    modality: str,
    n_patches: int,
    dim: int,
    directions: _Directions,
    factor: float | None,
    cfg: SyntheticConfig,
):
    ndim = 2 if modality == "wsi" else 3
    d = directions
    cells = _grid_points(rng, n_patches, ndim)
    n = len(cells)
    # Tissue types: Voronoi cells around a few random seeds.
    seeds = cells[rng.choice(n, size=min(len(d.tissue), n), replace=False)]
    _, kind = cKDTree(seeds).query(cells)
    features = rng.normal(size=(n, dim)) + d.tissue[kind]
    # The scanner/stain-like offset: every patch of the bag, along the signal direction.
    features += cfg.confounder * rng.normal() * d.w
    planted = np.zeros(n, dtype=bool)
    decoy = np.zeros(n, dtype=bool)
    lo, hi = cfg.extent

    def region(exclude=None):
        n_regions = int(rng.integers(cfg.n_regions[0], cfg.n_regions[1] + 1))
        frac = lo + (hi - lo) * (q if cfg.extent_signal else rng.uniform())
        size = min(max(1, int(round(frac * n))), n - 1)
        return _contiguous_regions(
            rng, cells.astype(float), size, n_regions, exclude, cfg.region_shape
        )

    if factor is not None:
        q = float(ndtr(factor))  # quantile of the latent factor, in (0, 1)
        planted = region()
        features[planted] += cfg.marker * d.u + cfg.shift * (0.5 + q) * d.w
    if cfg.decoy:
        q = float(rng.uniform())  # a decoy's shift: the same law, unrelated to the outcome
        decoy = region(exclude=planted)
        features[decoy] += cfg.marker * d.u2 + cfg.shift * (0.5 + q) * d.w
    size = cfg.wsi_patch_size if modality == "wsi" else cfg.ct_patch_size
    coords = cells * size
    bag = EmbeddingBag(
        features=features.astype(np.float32),
        coords=coords.astype(np.int64),
        modality=modality,
        patch_size=size,
        mpp=cfg.wsi_mpp if modality == "wsi" else None,
        spacing=tuple(cfg.ct_spacing) if modality == "ct" else None,
        encoder="synthetic",
    )
    return bag, planted, decoy


def _censoring_rate_for(hazards: np.ndarray, target: float) -> float:
    """Rate c of exponential censoring with mean_i P(C_i < T_i) = mean_i c/(c+h_i) = target."""
    if target <= 0:
        return 0.0
    lo, hi = 1e-12, 1e6 * hazards.max()
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if np.mean(mid / (mid + hazards)) < target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


# ------------------------------------------------------------------ cohort


def latent_factors(
    rng: np.random.Generator, n: int, signal: str, effect: float
) -> tuple[dict[str, np.ndarray | None], np.ndarray]:
    """Per-modality latent factors and the true linear predictor ``eta``.

    Two standard-normal factors are drawn. ``signal="split"`` gives each modality its own
    (``eta = effect * (z1 + z2) / sqrt(2)``); otherwise the modalities named by ``signal``
    (``"wsi"``, ``"ct"`` or ``"both"``) carry ``z1`` and ``eta = effect * z1``; a modality
    without signal gets ``None``.
    """
    z1, z2 = rng.normal(size=n), rng.normal(size=n)
    if signal == "split":
        return {"wsi": z1, "ct": z2}, effect * (z1 + z2) / math.sqrt(2)
    factors = {
        "wsi": z1 if signal in ("wsi", "both") else None,
        "ct": z1 if signal in ("ct", "both") else None,
    }
    return factors, effect * z1


def clinical_factor_columns(rng: np.random.Generator, factor: float) -> dict:
    """``marker`` (the factor plus noise of sd 0.5) and ``grade`` (G1-G4 from the factor plus
    noise of sd 0.7, cut at the standard normal's quartiles) for one patient."""
    coarse = factor + rng.normal(0, 0.7)
    grade = 1 + int(np.searchsorted([-0.674, 0.0, 0.674], coarse / math.sqrt(1.49)))
    return {"marker": round(float(factor + rng.normal(0, 0.5)), 3), "grade": f"G{grade}"}


def clinical_columns(rng: np.random.Generator, eta: float, effect: float) -> dict:
    """``age`` and ``sex`` (noise) and ``stage`` (1-4, a noisy, coarse reading of the
    hazard, as in real cohorts) for one patient."""
    return {
        "age": round(float(rng.normal(62, 10)), 1),
        "sex": "F" if rng.uniform() < 0.4 else "M",
        "stage": int(np.clip(np.round(2.5 + 0.5 * eta / effect + rng.normal(0, 1.0)), 1, 4)),
    }


def simulate_outcomes(rng: np.random.Generator, eta: np.ndarray, cfg: SyntheticConfig):
    """Exponential proportional-hazards event times with independent exponential censoring."""
    hazards = cfg.baseline_hazard * np.exp(eta)
    t_event = rng.exponential(1.0 / hazards)
    c_rate = _censoring_rate_for(hazards, cfg.censoring)
    t_cens = (
        rng.exponential(1.0 / c_rate, size=len(eta))
        if c_rate > 0
        else np.full_like(t_event, np.inf)
    )
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    if event.sum() == 0:  # keep the contract: a cohort must have an event
        event[np.argmin(t_event)] = 1
        time[np.argmin(t_event)] = t_event.min()
    return np.maximum(time, 1e-3), event


def make_synthetic_cohort(
    out_dir: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    progress: bool = True,
    **overrides,
) -> Path:
    """Write the synthetic cohort to ``out_dir`` and return the cohort CSV's path.

    Parameters
    ----------
    out_dir
        Folder to write: ``cohort.csv``, ``embeddings/<id>.<modality>.h5``,
        ``truth.csv`` (patient_id, eta, factors, planted fractions),
        ``truth/<id>.<modality>.npy`` (boolean planted mask, one entry per patch),
        ``truth/<id>.<modality>.decoy.npy`` (the decoy region's mask, with ``decoy``) and
        ``ceilings.json`` (C-index of the true risk, of an oracle ridge Cox model on the
        planted regions' mean and of one on the bag mean; see
        :func:`cross_validated_cox_c`).
    config
        A :class:`SyntheticConfig`; keyword ``overrides`` replace its fields.
    progress
        Show a progress bar.
    """

    cfg = config or SyntheticConfig()
    if overrides:
        cfg = SyntheticConfig(**{**asdict(cfg), **overrides})
    cfg.validate()
    out = Path(out_dir)
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    P = cfg.n_patients
    ct_dim = cfg.ct_dim or cfg.dim
    directions = {
        "wsi": _hidden_directions(rng, cfg.dim, cfg.n_tissue_types),
        "ct": _hidden_directions(rng, ct_dim, cfg.n_tissue_types),
    }
    dims = {"wsi": cfg.dim, "ct": ct_dim}
    spans = {"wsi": cfg.wsi_patches, "ct": cfg.ct_patches}

    factors, eta = latent_factors(rng, P, cfg.signal, cfg.effect)
    clinical_rng = np.random.default_rng([cfg.seed, 3])
    clinical_factor = clinical_rng.normal(size=P) if cfg.clinical_effect > 0 else None
    if clinical_factor is not None:
        eta = eta + cfg.clinical_effect * clinical_factor
    time, event = simulate_outcomes(rng, eta, cfg)

    missing = np.full(P, "", dtype=object)
    drop = rng.uniform(size=P) < cfg.missing_rate
    missing[drop] = np.where(rng.uniform(size=P) < 0.5, "wsi", "ct")[drop]

    ids = [f"SYN{i:04d}" for i in range(P)]
    rows, truth_rows = [], []
    bags = _BagWriter(out, cfg, directions, dims, spans, ids)
    for i in tqdm(range(P), desc="synthetic cohort", disable=not progress, unit="patient"):
        row = {"patient_id": ids[i], "time": round(float(time[i]), 4), "event": int(event[i])}
        truth = {"patient_id": ids[i], "eta": float(eta[i])}
        for modality in MODALITIES:
            bags.write(rng, i, modality, factors[modality], missing[i] == modality, row, truth)
        if cfg.clinical:
            row.update(clinical_columns(rng, float(eta[i]), cfg.effect))
        if clinical_factor is not None:
            row.update(clinical_factor_columns(clinical_rng, float(clinical_factor[i])))
            truth["clinical_factor"] = float(clinical_factor[i])
        rows.append(row)
        truth_rows.append(truth)
    ceilings = cohort_ceilings(time, event, eta, bags.region_mean, bags.bag_mean, rows, cfg)
    (out / "ceilings.json").write_text(json.dumps(ceilings, indent=2))
    columns = ["patient_id", "time", "event", "wsi", "ct"] + (
        ["age", "sex", "stage"] if cfg.clinical else []
    )
    if clinical_factor is not None:
        columns += ["marker", "grade"]
    pd.DataFrame(rows, columns=columns).to_csv(out / "cohort.csv", index=False)
    pd.DataFrame(truth_rows).to_csv(out / "truth.csv", index=False)
    (out / "synthetic_config.json").write_text(pd.Series(asdict(cfg)).to_json(indent=2))
    log.info("wrote %d patients to %s", P, out)
    return out / "cohort.csv"


class _BagWriter:
    """Draws and writes one patient's bag of one modality, keeping the per-patient summaries
    the ceilings are computed from (the mean of the planted patches and of the whole bag)."""

    def __init__(self, out: Path, cfg: SyntheticConfig, directions, dims, spans, ids) -> None:
        self.out, self.cfg, self.ids = out, cfg, ids
        self.directions, self.dims, self.spans = directions, dims, spans
        P = len(ids)
        self.region_mean = {m: np.full((P, dims[m]), np.nan) for m in MODALITIES}
        self.bag_mean = {m: np.full((P, dims[m]), np.nan) for m in MODALITIES}

    def write(self, rng, i: int, modality: str, factor, missing: bool, row, truth) -> None:
        """Patient ``i``'s bag (drawn even when ``missing``, so the random stream does not
        depend on which bags are missing), its file and truth masks, its cells of ``row``
        and ``truth``."""
        cfg, span = self.cfg, self.spans[modality]
        f = None if factor is None else float(factor[i])
        bag, planted, decoy = _make_bag(
            rng,
            modality=modality,
            n_patches=int(rng.integers(span[0], span[1] + 1)),
            dim=self.dims[modality],
            directions=self.directions[modality],
            factor=f,
            cfg=cfg,
        )
        truth[f"{modality}_factor"] = f
        truth[f"{modality}_planted_fraction"] = float(planted.mean())
        if missing:
            row[modality] = ""
            truth[f"{modality}_planted_fraction"] = None
            return
        self.bag_mean[modality][i] = bag.features.mean(0)
        if planted.any():
            self.region_mean[modality][i] = bag.features[planted].mean(0)
        name = f"{self.ids[i]}.{modality}"
        write_embeddings(self.out / "embeddings" / f"{name}.h5", bag)
        np.save(self.out / "truth" / f"{name}.npy", planted)
        if cfg.decoy:
            np.save(self.out / "truth" / f"{name}.decoy.npy", decoy)
        row[modality] = f"embeddings/{name}.h5"


def load_planted_mask(cohort_dir: str | os.PathLike, patient_id: str, modality: str) -> np.ndarray:
    """The ground-truth planted mask of one bag (one boolean per patch, file order)."""
    path = Path(cohort_dir) / "truth" / f"{patient_id}.{modality}.npy"
    if not path.exists():
        raise RadiopathInputError(
            "no ground truth for this bag", path=path, patient_id=patient_id, field=modality
        )
    return np.load(path)


def load_truth(cohort_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-patient ground truth table (``eta`` is the true linear predictor)."""
    path = Path(cohort_dir) / "truth.csv"
    if not path.exists():
        raise RadiopathInputError("no ground truth table", path=path)
    return pd.read_csv(path, dtype={"patient_id": str})
