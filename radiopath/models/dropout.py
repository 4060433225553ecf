"""Inverted dropout drawn from uniform random numbers (a faster mask on the CPU).

:class:`torch.nn.Dropout` draws its mask with ``bernoulli_``, which on the CPU costs
several times more than drawing uniform numbers and comparing them with ``p``; on graphs of
thousands of nodes the mask over every node's hidden vector is a noticeable part of a step.
:class:`Dropout` computes the same thing, ``x * m / (1 - p)`` with ``m_i ~ Bernoulli(1 - p)``
independent, from ``torch.rand_like(x) >= p`` (the tests check the keep rate, the scaling,
the gradient and that evaluation mode is the identity). It uses torch's global generator,
so ``torch.manual_seed`` makes it reproducible as before, but its masks differ from
``nn.Dropout``'s for the same seed.

:meth:`Dropout.after_relu` runs ReLU then dropout (an encoder's input projection) as one
product, with a mask from 16 random bits per unit (:func:`keep_scale_mask`).
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

    def after_relu(self, x: Tensor) -> Tensor:
        """``self(relu(x))``, in fewer passes over ``x`` on the CPU.

        In training on the CPU in float32 or float64 the mask is :func:`keep_scale_mask`'s,
        which also holds the ReLU's gate, so the forward is one product and the backward
        one (ReLU then dropout take five passes, the uniform numbers for the mask among
        them, and three back). Its masks differ from :meth:`forward`'s for the same seed.
        Otherwise (evaluation, ``p = 0``, an accelerator, a half type under autocast) it is
        ``self(relu(x))``.
        """
        cpu_float = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        if self.training and self.p > 0.0 and cpu_float:
            return _ReluDropout.apply(x, self.p)
        return self(torch.relu(x))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def keep_scale_mask(x: Tensor, p: float) -> Tensor:
    """A ``[*x.shape]`` tensor of ``x``'s type: ``1 / q`` where a unit is kept, with keep
    probability ``q``, and 0 where it is dropped, from 16 random bits per unit.

    Four units share one 64-bit draw of torch's global generator (a quarter of the draws
    of ``torch.rand_like``), so ``q`` is ``1 - p`` rounded to a multiple of :math:`2^{-16}`,
    and the kept units are scaled by that ``1 / q``: the expectation is ``x`` exactly.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    kept = round((1.0 - p) * 65536)
    if kept == 0:
        raise ValueError(f"dropout probability {p} keeps fewer than 1 in 65536 units")
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    bits = bits.random_(-(2**63), None).view(torch.int16)[:n].view(x.shape)
    # an int16 is uniform on [-32768, 32767]: it is kept when at least 32768 - kept
    mask = bits.to(x.dtype).sub_(32768 - kept - 0.5).sign_().relu_()
    return mask.mul_(65536.0 / kept)


class _ReluDropout(torch.autograd.Function):
    """``dropout(relu(x))`` as one product with a mask that holds both."""

    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        mask = keep_scale_mask(x, p).mul_(torch.relu(x).sign_())
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None
