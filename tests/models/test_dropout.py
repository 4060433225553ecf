"""The uniform-mask dropout against the definition of inverted dropout and nn.Dropout."""

from __future__ import annotations

import pytest
import torch

from radiopath.models.dropout import Dropout, keep_scale_mask


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


@pytest.mark.parametrize("p", [0.1, 0.5, 0.7])
def test_keep_scale_mask_rate_in_every_lane(p):
    """Four units share one 64-bit draw: each of the four 16-bit lanes must keep at the
    rate, and the scale must make the expectation exact (1 / the rounded keep rate)."""
    torch.manual_seed(1)
    mask = keep_scale_mask(torch.empty(100_000, 4), p)
    q = round((1 - p) * 65536) / 65536
    assert torch.unique(mask).tolist() == [0.0, pytest.approx(1 / q, rel=1e-6)]
    rate = (mask != 0).double().mean(0)  # column j holds lane j of each draw
    assert (rate - q).abs().max() < 5 * (q * (1 - q) / 100_000) ** 0.5
    # neighbouring lanes are independent: both kept at rate q squared
    both = ((mask[:, 0] != 0) & (mask[:, 1] != 0)).double().mean()
    assert abs(both - q * q) < 5 * (q * q * (1 - q * q) / 100_000) ** 0.5
    with pytest.raises(ValueError, match="fewer than 1 in 65536"):
        keep_scale_mask(torch.empty(3), 1 - 2**-20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_after_relu_is_relu_then_dropout(dtype):
    """The fused pass: every output is 0 or relu(x) / q, the ReLU's zeros stay zero, the
    keep rate among positive inputs is q, and the gradient is the same mask."""
    torch.manual_seed(0)
    x = torch.randn(100_000, 8, dtype=dtype, requires_grad=True)
    drop = Dropout(0.5).train()
    out = drop.after_relu(x)
    assert out.dtype == dtype
    positive = x.detach() > 0
    kept = out != 0
    assert not kept[~positive].any()
    torch.testing.assert_close(out[kept], 2 * x.detach()[kept])
    rate = kept[positive].double().mean().item()
    assert abs(rate - 0.5) < 5 * (0.25 / positive.sum().item()) ** 0.5
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, 2 * kept.to(dtype))
    # evaluation and p = 0: plain ReLU; seeded: reproducible
    assert torch.equal(drop.eval().after_relu(x), torch.relu(x))
    assert torch.equal(Dropout(0.0).train().after_relu(x), torch.relu(x))
    torch.manual_seed(4)
    a = drop.train().after_relu(x)
    torch.manual_seed(4)
    assert torch.equal(a, drop.after_relu(x))
