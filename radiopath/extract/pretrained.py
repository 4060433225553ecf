"""The encoders with weights, each built from a local checkpoint.

MONAI ResNet-18, the pathology foundation models (UNI, CONCH, CHIEF) and a SegVol-style CT
ViT; random initialisation only when asked for explicitly. Their optional packages are
imported when one is built.

The numbered references ([1]_ ...) are listed in :mod:`radiopath.extract.encoders`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radiopath.errors import RadiopathInputError
from radiopath.extract.checkpoints import load_checkpoint, load_weights
from radiopath.extract.patch_encoder import (
    HU_RANGE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PatchEncoder,
    _as_float_rgb,
    _normalise_rgb,
    _resize,
)
from radiopath.runkit import file_identity

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
            "checkpoint": file_identity(self.checkpoint),
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
        return {**super().config(), "checkpoint": file_identity(self.checkpoint)}

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
        return {**super().config(), "checkpoint": file_identity(self.checkpoint)}

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
        return {**super().config(), "checkpoint": file_identity(self.checkpoint)}

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
            "checkpoint": file_identity(self.checkpoint),
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
