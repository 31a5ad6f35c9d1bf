"""How the process allocates memory for long inference and training jobs (no torch import here)."""

from __future__ import annotations

import ctypes
import os
import platform

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest buffer glibc will serve from its heap instead of a fresh mmap (HEAP_MAX_SIZE / 2 on 64-bit)
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse: buffers up to 32 MB come from its heap, and the heap
    is never given back to the OS while the process runs. Returns whether it applied (glibc only).

    By default glibc returns a freed heap top over its (adaptive) trim threshold to the OS, so a job that
    interleaves a network's per-call activations with other allocations (making the partial faces, storing
    embeddings) gets fresh pages on every call: a minor page fault per 4 KB. Measured on the embedding loop:
    1.2-2.4 M faults per 18,688 faces; dlib's full PartialLFW in bf16 ran 1.19x faster without them
    (docs/history/benchmarks.md). Peak memory is unchanged;
    what the process once used stays mapped until it exits. ``PARTIALFACE_MALLOC=system`` leaves malloc as it is.
    """
    if os.environ.get("PARTIALFACE_MALLOC", "").lower() == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


__all__ = ["MMAP_THRESHOLD", "keep_freed_memory"]
