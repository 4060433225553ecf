"""The uniform-mask dropout against the definition of inverted dropout and nn.Dropout."""

from __future__ import annotations

import pytest
import torch

from radiopath.models.dropout import Dropout


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_keep_rate_scaling_and_gradient(p):
    torch.manual_seed(0)
    x = torch.rand(200_000, 8) + 0.5  # no zeros, so dropped entries are exactly the zeros
    x.requires_grad_(True)
    out = Dropout(p).train()(x)
    kept = out != 0
    # keep rate 1 - p within 5 standard errors
    n = kept.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5)
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, kept.float() / (1 - p))
    # same moments as torch's own dropout
    ref = torch.nn.Dropout(p).train()(x.detach())
    assert out.mean().item() == pytest.approx(ref.mean().item(), rel=0.01)
    assert out.std().item() == pytest.approx(ref.std().item(), rel=0.01)


def test_eval_and_zero_p_are_identity_and_seed_reproducible():
    x = torch.randn(50, 4)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    torch.manual_seed(3)
    a = Dropout(0.5).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.5).train()(x)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
