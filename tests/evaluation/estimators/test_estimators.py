"""The torch estimators together (radiopath/evaluation/estimators/): the same fit on CUDA as
on CPU."""

from __future__ import annotations

import pytest
import torch
from estimator_helpers import rel

from radiopath.evaluation.estimators import TorchCoxnet, TorchCoxPH, TorchFastSurvivalSVM


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(dataset):
    _, X, y, _ = dataset
    for cls, kw in (
        (TorchCoxPH, {"alpha": 1.0}),
        (TorchCoxnet, {"l1_ratio": 0.5, "n_alphas": 10}),
        (TorchFastSurvivalSVM, {"alpha": 0.1, "random_state": 0}),
    ):
        a = cls(device="cpu", **kw).fit(X, y).coef_
        b = cls(device="cuda", **kw).fit(X, y).coef_
        assert rel(b, a) < 1e-6
