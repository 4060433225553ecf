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

The encoders themselves live in :mod:`.patch_encoder` (the base class and preprocessing),
:mod:`.handcrafted`, :mod:`.pretrained` and :mod:`.checkpoints` (loading local weights); this
module is the registry and re-exports their public names.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from radiopath.errors import RadiopathInputError
from radiopath.extract.checkpoints import load_checkpoint, load_weights
from radiopath.extract.handcrafted import (
    CT_HANDCRAFTED_FEATURES,
    HU_BANDS,
    WSI_HANDCRAFTED_FEATURES,
    HandcraftedCTEncoder,
    HandcraftedWSIEncoder,
    glcm_features,
)
from radiopath.extract.patch_encoder import (
    CT_NORMALISATIONS,
    HU_RANGE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MED3D_MEAN,
    MED3D_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PatchEncoder,
)
from radiopath.extract.pretrained import (
    CHIEFEncoder,
    CONCHEncoder,
    ConvStem,
    ResNet18Encoder,
    SegVolEncoder,
    UNIEncoder,
)
from radiopath.runtime import resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "CHIEFEncoder",
    "CONCHEncoder",
    "CT_HANDCRAFTED_FEATURES",
    "CT_NORMALISATIONS",
    "ConvStem",
    "ENCODERS",
    "EncoderSpec",
    "HU_BANDS",
    "HU_RANGE",
    "HandcraftedCTEncoder",
    "HandcraftedWSIEncoder",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MED3D_MEAN",
    "MED3D_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PatchEncoder",
    "ResNet18Encoder",
    "SegVolEncoder",
    "UNIEncoder",
    "WSI_HANDCRAFTED_FEATURES",
    "available_encoders",
    "get_encoder",
    "get_encoder_spec",
    "glcm_features",
    "load_checkpoint",
    "load_weights",
    "register_encoder",
    "resolve_device",
]

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
