"""Keep freed host memory for reuse while training on the CPU (glibc only).

A training step on graphs of thousands of nodes allocates tens of tensors of 10-400 MB and
frees them at the end of the step. glibc's ``malloc`` serves every block above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and returns it with ``munmap``, so every
step touches new pages again, and the page faults and kernel time they cost grow with
the graphs until they are a large share of the step. PyTorch's CPU performance guide recommends a caching
allocator (jemalloc, tcmalloc) through ``LD_PRELOAD``; a library cannot preload one, but
glibc offers the same effect through :manpage:`mallopt(3)`: no mmap for large blocks
(``M_MMAP_MAX = 0``), so they come from the heap, and a high trim threshold
(``M_TRIM_THRESHOLD``), so freed heap memory is kept and reused.

The setting is process-wide and stays for the life of the process, after training too (the
process keeps up to 2 GiB of freed heap instead of returning it to the system; in a
notebook, restart the kernel to undo it); a configuration with ``tune_malloc: false``
leaves ``malloc`` alone, but does not undo an earlier run's setting in the same process. On other C libraries (macOS, Windows, musl) nothing is
done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

_TUNED = False


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):  # not glibc
        return None
    version.restype = ctypes.c_char_p
    return libc


def tune_cpu_malloc(trim_threshold: int = 2**31 - 1, top_pad: int = 2**26) -> bool:
    """Make glibc keep and reuse freed memory (see the module docstring).

    Args:
        trim_threshold: free memory at the top of the heap kept before it is returned to
            the system (bytes; clamped to glibc's ``int`` range, so at most 2 GiB).
        top_pad: extra bytes requested from the system whenever the heap grows (clamped
            likewise).

    Returns:
        True if the C library is glibc and accepted the settings (also when they were
        already applied), False otherwise.
    """
    global _TUNED
    if _TUNED:
        return True
    libc = _glibc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(param, ctypes.c_int(value)) == 1
        for param, value in (
            (M_MMAP_MAX, 0),
            (M_TRIM_THRESHOLD, min(max(trim_threshold, 0), 2**31 - 1)),
            (M_TOP_PAD, min(max(top_pad, 0), 2**31 - 1)),
        )
    )
    if ok:
        _TUNED = True
        log.info("glibc malloc tuned for training: large blocks from the heap, kept for reuse")
    return ok
