"""One device rule and one thread limiter for every stage."""

from __future__ import annotations

import pytest
import torch

from radiopath import runtime
from radiopath.errors import RadiopathInputError
from radiopath.runtime import intra_op_threads, resolve_device


def test_auto_prefers_cuda_then_mps_unless_double_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: True)
    assert resolve_device("auto").type == "mps"
    assert resolve_device(None).type == "mps"
    assert resolve_device("auto", float64=True).type == "cpu"
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", float64=True).type == "cuda"


@pytest.mark.parametrize(
    "name, message", [("gpu0", "unknown device"), ("cuda:0", "CUDA"), ("mps", "MPS")]
)
def test_bad_or_absent_devices_are_refused_naming_the_field(monkeypatch, name, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)
    with pytest.raises(RadiopathInputError, match=message) as info:
        resolve_device(name)
    assert "device" in str(info.value)


def test_every_stage_uses_the_same_resolver():
    from radiopath.evaluation import _cox
    from radiopath.extract import encoders
    from radiopath.training import cv

    assert cv.resolve_device is encoders.resolve_device is runtime.resolve_device
    assert _cox.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(RadiopathInputError, match="unknown device"):
        _cox.resolve_device("nonsense")


def test_thread_limit_is_restored_and_a_bad_value_names_its_field():
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with intra_op_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with intra_op_threads(target, "meta"):  # not the CPU: torch's setting is left alone
        assert torch.get_num_threads() == before
    from radiopath.evaluation._cox import torch_threads

    with pytest.raises(RadiopathInputError, match="evaluation.num_threads"):
        with torch_threads(0):
            pass
    assert torch.get_num_threads() == before
