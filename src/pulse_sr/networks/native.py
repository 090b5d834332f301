"""Build and load the fused C epilogue kernels (``epilogue_kernels.c``) on first use.

The kernels are plain C99 with no Python or torch headers, so a build takes
about a second. It is compiled with the system C compiler (``$CC``, default
``cc``) for this CPU (``-march=native``), and cached under
``$PULSE_CACHE/kernels``, keyed by the source, the compiler, the flags and the
CPU. Without a compiler, or with ``PULSE_NO_NATIVE=1``, :func:`load` returns
None and the epilogue falls back to torch ops: same results, slower at
512 and 1024 px. ``ctypes`` calls release the GIL, so a small thread pool runs
the pixel ranges in parallel.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Callable, List, Optional

from ..paths import cache_dir

log = logging.getLogger(__name__)

_SOURCE = "epilogue_kernels.c"
# -fno-trapping-math lets gcc turn the leaky ReLU branch into a vector blend (12x here).
_FLAG_SETS = (["-O3", "-march=native", "-fno-trapping-math"], ["-O3", "-fno-trapping-math"])
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_tried = False
_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0
build_error: Optional[str] = None  # why the last build failed, for diagnostics

_P, _I = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "epi_stats": [_P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P],
    "epi_forward": [_P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P],
    "epi_backward_sums": [_P, _P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P],
    "epi_backward": [_P, _P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _P],
}


def _cpu_id() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build() -> Optional[ctypes.CDLL]:
    global build_error
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        build_error = f"no C compiler ({cc!r} not found)"
        return None
    try:
        source = resources.files(__package__).joinpath(_SOURCE).read_bytes()
    except OSError as e:
        build_error = f"kernel source missing ({e})"
        return None
    version = _compiler_id(cc)
    out_dir = cache_dir() / "kernels"
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, cc.encode(), version.encode(), " ".join(flags).encode(),
                                         _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:16]
        path = out_dir / f"epilogue-{key}.so"
        if not path.exists():
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                    src, lib = Path(tmp) / _SOURCE, Path(tmp) / "k.so"
                    src.write_bytes(source)
                    r = subprocess.run([cc, *flags, "-std=c99", "-fPIC", "-shared", "-o", str(lib), str(src)],
                                       capture_output=True, text=True, timeout=120)
                    if r.returncode != 0:
                        errors.append(f"{' '.join(flags)}: {r.stderr.strip()[-500:]}")
                        continue
                    os.replace(lib, path)  # atomic: concurrent builders write the same bytes
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{' '.join(flags)}: {e}")
                continue
        try:
            lib = ctypes.CDLL(str(path))
            for name, argtypes in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, None
            build_error = None
            return lib
        except (OSError, AttributeError) as e:
            errors.append(f"{path}: {e}")
    build_error = "; ".join(errors) or "unknown error"
    return None


def load() -> Optional[ctypes.CDLL]:
    """The kernel library, building it on first call; None if unavailable or disabled."""
    global _lib, _tried
    if os.environ.get("PULSE_NO_NATIVE"):
        return None
    if not _tried:
        with _lock:
            if not _tried:
                _lib = _build()
                _tried = True
                if _lib is None:
                    log.info("fused C epilogue unavailable (%s); using torch ops", build_error)
    return _lib


def parallel(threads: int, pixels: int, fn: Callable[[int, int, int], None]) -> None:
    """Call ``fn(thread, p0, p1)`` on ``threads`` contiguous pixel ranges, in parallel."""
    global _pool, _pool_size, _pool_pid
    threads = max(1, min(threads, pixels // 1024 or 1))
    if threads == 1:
        fn(0, 0, pixels)
        return
    # A forked child inherits the pool object but not its threads: start a new one.
    if _pool is None or _pool_size < threads or _pool_pid != os.getpid():
        with _lock:
            if _pool is None or _pool_size < threads or _pool_pid != os.getpid():
                _pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="pulse-epilogue")
                _pool_size, _pool_pid = threads, os.getpid()
    bounds: List[int] = [pixels * i // threads for i in range(threads + 1)]
    futures = [_pool.submit(fn, i, bounds[i], bounds[i + 1]) for i in range(threads)]
    for f in futures:
        f.result()
