"""Time one command on this checkout and on a baseline checkout, runs alternating, in one sitting.

    python benchmarks/ab_compare.py --baseline-src /tmp/base/src --runs 5 \
        [--figure steady_s_per_step] -- python benchmarks/step_time.py --steps 6

    python benchmarks/ab_compare.py --baseline-src /tmp/base/src --runs 5 -- \
        pulse upsample /tmp/lr16 --out {out} --seed 0 --quiet

Each run is a fresh process. The baseline runs with ``PYTHONPATH=<baseline-src>``
(a ``git worktree add /tmp/base <commit>`` of the previous commit), which wins
over this checkout's editable install; ``pulse`` is run as ``python -m pulse_sr``
so that the same rule applies. ``{out}`` in the command becomes a fresh empty
folder per run, so no run resumes another. With ``--figure NAME`` the figure is
``NAME=<number>`` read from the command's output; otherwise the wall time of the
whole command. Prints every run, then the medians and their ratio.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def one_run(cmd, src: Path, figure, scratch: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="ab-out-", dir=scratch))
    shutil.rmtree(out)  # a folder that does not exist yet, as a first run sees it
    argv = [str(out) if a == "{out}" else a for a in cmd]
    if argv[0] == "pulse":
        argv = [sys.executable, "-m", "pulse_sr"] + argv[1:]
    elif argv[0] == "python":
        argv = [sys.executable] + argv[1:]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode not in (0, 3):
        sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    if figure is None:
        return wall
    m = re.search(rf"{re.escape(figure)}=([0-9.eE+-]+)", done.stdout + done.stderr)
    if m is None:
        sys.exit(f"no {figure}= in the output of {' '.join(argv)}")
    return float(m.group(1))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--baseline-src", required=True, type=Path, help="src/ of the baseline checkout")
    p.add_argument("--this-src", type=Path, default=SRC,
                   help="src/ of the checkout to compare (default: this one; give a worktree of a commit "
                        "to measure it while editing here)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--figure", default=None, help="read NAME=<number> from the output instead of timing")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("give the command after --")
    sides = {"baseline": args.baseline_src.resolve(), "this": args.this_src.resolve()}
    figures = {k: [] for k in sides}
    with tempfile.TemporaryDirectory(prefix="ab-") as scratch:
        for i in range(args.runs):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for side in order:
                v = one_run(cmd, sides[side], args.figure, Path(scratch))
                figures[side].append(v)
                print(f"run {i + 1} {side}: {v:.3f}", flush=True)
    what = args.figure or "wall_s"
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"{what} median: baseline={med['baseline']:.3f} this={med['this']:.3f} "
          f"ratio={med['this'] / med['baseline']:.3f} (runs={args.runs} each, alternating)")


if __name__ == "__main__":
    main(sys.argv[1:])
