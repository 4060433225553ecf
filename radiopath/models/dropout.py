"""Inverted dropout drawn from uniform random numbers (a faster mask on the CPU).

:class:`torch.nn.Dropout` draws its mask with ``bernoulli_``, which on the CPU costs
several times more than drawing uniform numbers and comparing them with ``p``; on graphs of
thousands of nodes the mask over every node's hidden vector is a noticeable part of a step.
:class:`Dropout` computes the same thing, ``x * m / (1 - p)`` with ``m_i ~ Bernoulli(1 - p)``
independent, from ``torch.rand_like(x) >= p`` (the tests check the keep rate, the scaling,
the gradient and that evaluation mode is the identity). It uses torch's global generator,
so ``torch.manual_seed`` makes it reproducible as before, but its masks differ from
``nn.Dropout``'s for the same seed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Dropout(nn.Module):
    """Drop-in for :class:`torch.nn.Dropout` (same ``p``, same train/eval behaviour)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":  # bernoulli is fast on accelerators: use torch's kernel
            return nn.functional.dropout(x, self.p, True)
        keep = torch.rand_like(x).ge_(self.p)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
