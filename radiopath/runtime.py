"""Where and how torch runs: one device rule and one thread limiter for every stage.

Extraction, training and evaluation all take ``device="auto"`` and a number of CPU threads;
they resolve them here, so a device string means the same thing in every command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from radiopath.errors import RadiopathInputError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(
    device: str | torch.device | None = "auto", *, float64: bool = False
) -> torch.device:
    """The torch device that ``device`` names.

    ``"auto"`` (or None): CUDA if available, else Apple MPS (unless ``float64`` work is to
    run there: MPS has no double precision), else the CPU. Any other name (``"cpu"``,
    ``"cuda:1"``, ``"mps"``) is checked: an unknown name, or CUDA / MPS where there is
    none, is refused with the field ``device`` named.
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if not float64 and _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise RadiopathInputError(f"unknown device {device!r} ({exc})", field="device") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RadiopathInputError("CUDA was asked for but is not available", field="device")
    if dev.type == "mps" and not _mps_available():
        raise RadiopathInputError("MPS was asked for but is not available", field="device")
    return dev


@contextmanager
def intra_op_threads(
    num_threads: int | None, device: str | torch.device = "cpu", field: str = "num_threads"
) -> Iterator[None]:
    """Run the enclosed block with ``num_threads`` torch intra-op threads on the CPU, and
    restore the previous setting afterwards.

    ``None``, or a non-CPU device (where host threads only launch kernels), leaves torch's
    setting alone. The work here is many short kernels on small tensors: on a machine whose
    cores are shared, threads mostly wait on each other, so the stages default to one.
    A value that is not a positive integer is refused, naming ``field``.
    """
    if num_threads is None or torch.device(device).type != "cpu":
        yield
        return
    if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
        raise RadiopathInputError(
            f"must be a positive integer or null, got {num_threads!r}", field=field
        )
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity where the platform says, else
    the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
