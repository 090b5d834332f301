"""Install torch the way this machine needs it: the CPU build unless there is an NVIDIA GPU.

    python scripts/install_torch.py [--version 2.13.0] [--build auto|cpu|cuda] [--dry-run]

PyPI's Linux torch wheel depends on the CUDA toolkit, cuDNN, NCCL, cuBLAS, Triton and more
(several GB). On Linux without an NVIDIA GPU (no ``nvidia-smi``, no ``/proc/driver/nvidia``) this
installs from PyTorch's CPU wheel index instead (about 200 MB). Where that index cannot be reached
(offline machines with a local wheel mirror, proxies), it falls back to the plain ``pip install
torch==VERSION`` and says so. macOS and Windows wheels on PyPI are CPU (or MPS) builds already.

``--build cpu`` forces the CPU index, ``--build cuda`` the plain (CUDA) wheel; ``TORCH_BUILD`` in
the environment does the same for ``make venv``. ``--dry-run`` prints the pip command only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Callable, List, Optional

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BUILDS = ("auto", "cpu", "cuda")


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia")


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers an HTTP request within ``timeout`` seconds (any status below 500)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as r:
            return r.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def plan(version: str, build: str = "auto", *, system: Optional[str] = None, nvidia: Optional[bool] = None,
         index_ok: Callable[[str], bool] = reachable, index: str = CPU_INDEX) -> tuple:
    """(pip arguments after ``pip install``, a sentence saying why)."""
    if build not in BUILDS:
        raise SystemExit(f"--build must be one of {', '.join(BUILDS)}, got {build!r}")
    pkg = f"torch=={version}"
    system = system or platform.system()
    if build == "cuda":
        return [pkg], "the CUDA build (asked for)"
    if build == "auto":
        if system != "Linux":
            return [pkg], f"PyPI's {system} wheel is a CPU build already"
        if has_nvidia_gpu() if nvidia is None else nvidia:
            return [pkg], "an NVIDIA GPU is present: the CUDA build"
    if index_ok(index.rstrip("/") + "/torch/"):
        return ["--index-url", index, pkg], f"the CPU build, from {index}"
    return [pkg], (f"{index} cannot be reached: the plain wheel (the CPU build only where a local one is "
                   f"installed, as on an offline mirror; else the CUDA build)")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--version", default="2.13.0")
    p.add_argument("--build", default=os.environ.get("TORCH_BUILD", "auto"), choices=BUILDS)
    p.add_argument("--index", default=CPU_INDEX, help="the CPU wheel index (a mirror of it, for example)")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    pip_args, why = plan(args.version, args.build, index=args.index)
    cmd = [sys.executable, "-m", "pip", "install", "-q", *pip_args]
    print(f"torch: {why}\n  {' '.join(cmd)}", flush=True)
    if args.dry_run:
        return 0
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
