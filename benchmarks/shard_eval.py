"""Throughput of `pulse eval` on the bundled model: one process against N torchrun ranks.

    python benchmarks/shard_eval.py DATA_DIR [--images 8] [--runs 1] [--steps 100] [--ranks 2] [--repeats 2]
                                             [--batch 1]

DATA_DIR holds HR faces (e.g. ../shared/data/utkface/test). Each mode runs the
whole command (start-up included) into a fresh folder, the modes alternating,
and prints wall seconds and units (image x run) per minute for each run, then
the median of each mode. On a GPU machine each rank takes one GPU
(`--ranks` = the number of GPUs); on a CPU the ranks split the cores, so expect
little gain there: the single process already uses every core.
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"
    wanted = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile")
    return " ".join(f for f in wanted if f" {f}" in flags)


def run(cmd, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=1, help="pulse eval --batch (units per search)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)

    common = ["eval", args.data_dir, "--model", "default", "--scale", str(args.scale), "--runs", str(args.runs),
              "--images", str(args.images), "--steps", str(args.steps), "--grid", "0", "--no-niqe", "--quiet", "--batch", str(args.batch)]
    if args.device:
        common += ["--device", args.device]
    modes = {
        "1 process": [sys.executable, "-m", "pulse_sr"] + common,
        f"{args.ranks} ranks": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                "--nproc-per-node", str(args.ranks), "-m", "pulse_sr"] + common,
    }
    units = args.images * args.runs
    print(f"CPU: {platform.machine()}, {os.cpu_count()} cores, flags: {cpu_flags()}")
    print(f"pulse eval, bundled model, x{args.scale}, {args.images} images x {args.runs} runs = {units} units, "
          f"{args.steps} steps, --batch {args.batch}")
    times = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for mode, cmd in modes.items():
                s = run(cmd, Path(tmp) / "out")
                times[mode].append(s)
                print(f"  repeat {rep}: {mode}: {s:.1f} s, {60 * units / s:.1f} units/min", flush=True)
    for mode, ts in times.items():
        med = statistics.median(ts)
        print(f"{mode}: median {med:.1f} s, {60 * units / med:.1f} units/min")


if __name__ == "__main__":
    main()
