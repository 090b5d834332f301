"""Process-level CPU performance settings.

A PULSE step at 1024 px allocates and frees dozens of 16-64 MB activation
tensors. glibc serves blocks that large with fresh ``mmap`` calls and returns
them on ``free``, so every new tensor page-faults its memory in again; on the
2-core machines here that made element-wise ops about 2.5x slower than the
same op writing into an existing buffer. Keeping freed blocks in the heap
(``M_MMAP_MAX=0`` and a high ``M_TRIM_THRESHOLD``) removes that cost; the
price is that the process keeps its peak memory until it exits.

Set ``PULSE_NO_MALLOC_TUNING=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_done = False


def tune_malloc() -> bool:
    """Apply the glibc settings once per process; True if they were applied."""
    global _done
    if _done:
        return True
    if os.environ.get("PULSE_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
              and libc.mallopt(_M_TOP_PAD, 64 * 2 ** 20) == 1)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    _done = ok
    return ok
