"""One generic builder for the project's C kernels, and a thread pool to run them.

:func:`get_library` compiles the C sources an op names (plain C99, no Python or
torch headers, so a build takes about a second) with the system C compiler
(``$CC``, default ``cc``) for this CPU (``-march=native``), and caches the shared
library under ``$PULSE_CACHE/kernels``, keyed by the sources, the compiler, the
flags and the CPU. It knows nothing about any one kernel: each op passes its
sources and its C signatures, and decides itself what to do when the library is
unavailable (None, with the reason in :func:`build_error`). ``ctypes`` calls
release the GIL, so :func:`parallel` runs pixel ranges on a small thread pool.
"""
from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..runtime import trusted_cache, trusted_file

# -fno-trapping-math lets gcc turn branches such as a leaky ReLU into vector blends (12x here).
FLAG_SETS = (("-O3", "-march=native", "-fno-trapping-math"), ("-O3", "-fno-trapping-math"))
_lock = threading.Lock()
_libraries: Dict[str, Tuple[Optional[ctypes.CDLL], Optional[str]]] = {}  # name -> (library, why not)
_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0


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


def _build(name: str, sources: Sequence[str], signatures: Mapping[str, list],
           source_dir) -> Tuple[Optional[ctypes.CDLL], Optional[str]]:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        return None, f"no C compiler ({cc!r} not found)"
    try:
        texts = [source_dir.joinpath(src).read_bytes() for src in sources]
    except OSError as e:
        return None, f"kernel source missing ({e})"
    version = _compiler_id(cc)
    out_dir = trusted_cache("kernels")
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([*texts, cc.encode(), version.encode(), " ".join(flags).encode(),
                                         _cpu_id().encode(), platform.machine().encode()])).hexdigest()[:16]
        path = out_dir / f"{name}-{key}.so"
        if path.exists() and not trusted_file(path):
            path.unlink(missing_ok=True)  # not ours, or writable by others: never load it, rebuild it
        if not path.exists():
            try:
                with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                    srcs = [Path(tmp) / Path(src).name for src in sources]
                    for src, text in zip(srcs, texts):
                        src.write_bytes(text)
                    lib = Path(tmp) / "k.so"
                    r = subprocess.run([cc, *flags, "-std=c99", "-fPIC", "-shared", "-o", str(lib),
                                        *map(str, srcs)], capture_output=True, text=True, timeout=120)
                    if r.returncode != 0:
                        errors.append(f"{' '.join(flags)}: {r.stderr.strip()[-500:]}")
                        continue
                    os.chmod(lib, 0o700)
                    os.replace(lib, path)  # atomic: concurrent builders write the same bytes
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{' '.join(flags)}: {e}")
                continue
        try:
            lib = ctypes.CDLL(str(path))
            for fn_name, argtypes in signatures.items():
                fn = getattr(lib, fn_name)
                fn.argtypes, fn.restype = argtypes, None
            return lib, None
        except (OSError, AttributeError) as e:
            errors.append(f"{path}: {e}")
    return None, "; ".join(errors) or "unknown error"


def get_library(name: str, sources: Sequence[str], signatures: Mapping[str, list],
                source_dir) -> Optional[ctypes.CDLL]:
    """The shared library ``name`` built from ``sources`` (file names under ``source_dir``,
    a Path or an ``importlib.resources`` folder), with the ctypes ``signatures``
    ({function: argtypes}, each returning void) applied.

    Built on the first call in a process, then cached in memory and on disk.
    Returns None when it cannot be built; :func:`build_error` says why.
    """
    if name not in _libraries:
        with _lock:
            if name not in _libraries:
                _libraries[name] = _build(name, sources, signatures, source_dir)
    return _libraries[name][0]


def build_error(name: str) -> Optional[str]:
    """Why library ``name`` is unavailable; None if it was built or never asked for."""
    return _libraries.get(name, (None, None))[1]


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
                _pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="pulse-kernels")
                _pool_size, _pool_pid = threads, os.getpid()
    bounds: List[int] = [pixels * i // threads for i in range(threads + 1)]
    futures = [_pool.submit(fn, i, bounds[i], bounds[i + 1]) for i in range(threads)]
    for f in futures:
        f.result()
