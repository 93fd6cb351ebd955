"""Process-level settings of a training run on CPU.

:func:`keep_freed_memory` stops glibc's ``malloc`` from handing freed multi-megabyte buffers back
to the kernel. By default glibc serves large allocations with fresh ``mmap`` pages and returns
them on ``free``; a training step on CPU allocates and frees many tensors of a few MB (3D
activations, the index tensors of the appearance corruption), so every step pays a page fault
per 4 KiB touched (measured here: ~8,000 page faults and ~20 ms of kernel time per 128³
corruption call; ~40 after this call). Raising the mmap and trim thresholds keeps freed memory
in the heap for reuse — the behaviour of PyTorch's own caching allocator on GPU — at the cost
of a resident set that stays at its peak.

The ``gemini-pl`` console script calls it at start-up; set ``GEMINI_PL_KEEP_FREED_MEMORY=0`` to
opt out. Anywhere but Linux with glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE / 2 (32 MiB on 64-bit systems); larger blocks stay mmap-ed
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 1024 * 1024 * 1024


def keep_freed_memory() -> bool:
    """Raise glibc's mmap threshold (32 MiB) and trim threshold (1 GiB) for this process.

    Returns True when both settings were applied; False where they do not apply (not glibc,
    or ``GEMINI_PL_KEEP_FREED_MEMORY=0``).
    """
    if os.environ.get("GEMINI_PL_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
