r"""How a patient's modality vectors become one patient vector, and the clinical branch.

Three fusions inside the model (``late`` fusion, one model per modality combined on their
risks, lives in :mod:`radiopath.training.late`):

``concat``
    The modality vectors side by side, as in SPARRA (Gao et al. 2025, Sec. 2.2) and Boeke
    et al.'s intermediate fusion. A missing modality's slot holds a learned vector.
``mean``
    Each modality projected to one width (a linear map per modality, then a layer
    normalisation without parameters, so that no modality can outweigh the others by its
    scale), then the element-wise mean over the modalities the patient *has* (MeD-3D's
    early fusion by mean).
``attention``
    The same projections, weighted by a softmax over one score per modality and patient
    (a gated-attention score, Ilse et al. 2018, read over modalities instead of patches:
    MMDLM's attention layer that weights each modality's contribution). Missing modalities
    get no weight. The weights are returned per patient.

For ``mean`` and ``attention`` a patient with none of the model's modalities present (only
possible in the unimodal stage of staged training) is read from the learned vectors of
every modality instead.

``concat`` is linear in each modality's vector, which is what the signed risk contributions
of :meth:`~radiopath.models.MultimodalSurvivalModel.forward` use; the layer normalisation
of ``mean`` and ``attention`` is not, so their contributions are those of the linearisation
at the patient's own vectors (exact for the patient: the normalisation's scale and centre
are held at their values for that patient).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

FUSIONS = ("concat", "mean", "attention")


class ClinicalBranch(nn.Module):
    """An MLP over a patient's encoded clinical variables (MeD-3D's EHR branch: 256-128-64,
    ReLU, dropout 0.3 after each layer).

    Args:
        in_channels: width of the encoded clinical vector
            (:class:`radiopath.clinical.preprocess.ClinicalPreprocessor`).
        hidden: the widths of the layers; the last is the branch's output width.
        dropout: dropout after each layer.
    """

    def __init__(
        self, in_channels: int, hidden: Sequence[int] = (256, 128, 64), dropout: float = 0.3
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"the clinical branch needs at least one input, got {in_channels}")
        if not hidden:
            raise ValueError("the clinical branch needs at least one layer")
        layers: list[nn.Module] = []
        width = in_channels
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        self.mlp = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class ModalityFusion(nn.Module):
    """Fuse ``[B, d_m]`` modality vectors into ``[B, out_channels]``.

    Args:
        widths: the width of each modality's vector, in the model's modality order.
        fusion: ``"concat"``, ``"mean"`` or ``"attention"``.
        hidden: the common width of ``mean`` and ``attention`` (each modality is projected
            to it), and the width of the attention's score network.
    """

    def __init__(self, widths: Sequence[int], fusion: str = "concat", hidden: int = 64) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.widths = [int(w) for w in widths]
        if fusion == "concat":
            self.projections = None
            self.out_channels = sum(self.widths)
            return
        self.projections = nn.ModuleList(nn.Linear(w, hidden) for w in self.widths)
        # Each projected vector is layer-normalised: without it a projection could scale its
        # modality up or down freely, and the weights would say nothing about how much a
        # modality counts.
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.out_channels = hidden
        if fusion == "attention":
            self.attention_v = nn.Linear(hidden, hidden)
            self.attention_u = nn.Linear(hidden, hidden)
            self.attention_w = nn.Linear(hidden, 1)

    def project(self, i: int, vec: Tensor) -> Tensor:
        """Modality ``i``'s vector as the fusion reads it (identity for ``concat``)."""
        return vec if self.projections is None else self.norm(self.projections[i](vec))

    def forward(self, vectors: Sequence[Tensor], present: Tensor) -> tuple[Tensor, Tensor]:
        """``(patient vectors [B, out_channels], weights [B, M])``.

        ``present`` ``[B, M]`` bool: which patient has which modality (the others hold
        learned vectors); ``concat`` weights are all 1."""
        if self.projections is None:
            return torch.cat(list(vectors), 1), present.new_ones(
                present.shape, dtype=vectors[0].dtype
            )
        z = torch.stack([self.project(i, v) for i, v in enumerate(vectors)], 1)  # [B, M, H]
        # a patient with no modality present is read from every modality's learned vector
        mask = present | ~present.any(1, keepdim=True)
        if self.fusion == "mean":
            alpha = mask.to(z.dtype) / mask.sum(1, keepdim=True).to(z.dtype)
        else:
            gate = torch.tanh(self.attention_v(z)) * torch.sigmoid(self.attention_u(z))
            score = self.attention_w(gate).squeeze(-1)  # [B, M]
            score = score.masked_fill(~mask, float("-inf"))
            alpha = torch.softmax(score.float(), 1).to(z.dtype)
        return (alpha.unsqueeze(-1) * z).sum(1), alpha

    def linear_map(self, i: int, vec: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """Modality ``i``'s projection and normalisation as an affine map held at the
        patients' own vectors ``vec`` ``[B, d_i]``: ``(weight [H, d_i], bias [H], scale [B])``
        with ``project(i, vec)[b] = (weight @ vec[b] + bias) / scale[b]`` (``None`` for
        ``concat``). The layer normalisation's centring is linear (folded into ``weight``
        and ``bias``); its scale is the patient's own."""
        if self.projections is None:
            return None
        layer = self.projections[i]
        y = layer(vec)
        scale = torch.sqrt(y.var(1, unbiased=False) + self.norm.eps)
        weight = layer.weight - layer.weight.mean(0, keepdim=True)
        bias = layer.bias - layer.bias.mean()
        return weight, bias, scale
