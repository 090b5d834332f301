"""Process-wide settings: the cache folder, the device, and CPU allocator tuning.

Only entry points call the switches here: the CLI and :mod:`pulse_sr.pipelines`.
The search core (:mod:`pulse_sr.search`) never does; a library user who runs
:func:`pulse_sr.upsample` directly on a CPU should call :func:`tune` once at
start-up (see the README).

Why the allocator: a PULSE step at 1024 px allocates and frees dozens of 16-64 MB
activation tensors. glibc serves blocks that large with fresh ``mmap`` calls and
returns them on ``free``, so every new tensor page-faults its memory in again; on
the 2-core machines here that made element-wise ops about 2.5x slower than the
same op writing into an existing buffer. Keeping freed blocks in the heap
(``M_MMAP_MAX=0`` and a high ``M_TRIM_THRESHOLD``) removes that cost; the price
is that the process keeps its peak memory until it exits. Set
``PULSE_NO_MALLOC_TUNING=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_malloc_tuned = False


def cache_dir() -> Path:
    """Where downloads, Gaussian fits and built kernels live: ``$PULSE_CACHE``, default ``~/.cache/pulse-sr``."""
    return Path(os.environ.get("PULSE_CACHE", "~/.cache/pulse-sr")).expanduser()


def _owned_and_private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def trusted_file(path: Path) -> bool:
    """Whether ``path`` is a regular file of ours that nobody else can write (always True off POSIX)."""
    if os.name != "posix":
        return True
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and _owned_and_private(st)


def trusted_cache(name: str) -> Path:
    """``cache_dir() / name``, created 0700, if it is ours and private; else a private folder of our own.

    Compiled kernels are loaded as code and Gaussian fits are trusted as data, so
    a folder that another user can write to is never read from: anyone who can
    write there could run code in every later ``pulse`` process.
    """
    wanted = cache_dir() / name
    if os.name != "posix":
        wanted.mkdir(parents=True, exist_ok=True)
        return wanted
    try:
        wanted.mkdir(parents=True, exist_ok=True, mode=0o700)
        if _owned_and_private(wanted.stat()):
            return wanted
    except OSError:
        pass
    private = Path(tempfile.gettempdir()) / f"pulse-sr-{os.getuid()}" / name
    try:
        private.parent.mkdir(mode=0o700, exist_ok=True)
        private.mkdir(mode=0o700, exist_ok=True)
        if not (_owned_and_private(private.parent.stat()) and _owned_and_private(private.stat())):
            raise OSError("not private")
    except OSError:
        private = Path(tempfile.mkdtemp(prefix=f"pulse-sr-{name}-"))  # 0700, fresh, ours
    log.warning("%s is writable by others or not ours; using %s instead", wanted, private)
    return private


def pick_device(device=None):
    """The device asked for, else cuda if available, else mps, else cpu (``"auto"`` = None)."""
    import torch

    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def tune_malloc() -> bool:
    """Apply the glibc settings above once per process; True if they are in force."""
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if os.environ.get("PULSE_NO_MALLOC_TUNING") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1) == 1
              and libc.mallopt(_M_TOP_PAD, 64 * 2 ** 20) == 1)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    _malloc_tuned = ok
    return ok


def tune(device=None):
    """Pick the device and apply the process-wide switches that suit it; returns the device.

    Call once at start-up, before the first search. On CPU this tunes glibc's
    allocator (see the module docstring); elsewhere it changes nothing.
    """
    dev = pick_device(device)
    if dev.type == "cpu":
        tune_malloc()  # Faster element-wise ops at 512-1024 px; keeps peak memory.
    return dev
