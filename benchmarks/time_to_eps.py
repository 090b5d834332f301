"""Time-to-eps for x64 (16 -> 1024 px) on a full-size random-weight StyleGAN v1.

    python benchmarks/time_to_eps.py [--n 3] [--device cpu] [--max-steps 100]

LR targets are the generator's own samples (seeds 100, 101, ...) downscaled
to 16x16, so a solution exists. The search runs with the paper's settings plus
early stopping. Prints seconds and steps to eps per image and the success rate.
"""

import argparse
import statistics
import sys
import time

import torch

from pulse_sr import PulseModel, PulseOptions, StyleGAN1Generator, bicubic_downscale, runtime, upsample
from pulse_sr.search.prior import compute_gaussian_fit


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--lr-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fit-samples", type=int, default=100_000)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    device = runtime.tune(args.device)
    G = StyleGAN1Generator(resolution=args.resolution).eval().requires_grad_(False).to(device)
    t = time.perf_counter()
    model = PulseModel(G, compute_gaussian_fit(G, args.fit_samples, chunk=25_000), source="random")
    print(f"gaussian fit ({args.fit_samples} samples): {time.perf_counter() - t:.1f} s", flush=True)
    factor = args.resolution // args.lr_size
    rows = []
    for i in range(args.n):
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(100 + i)).to(args.device)
        with torch.no_grad():
            hr = ((G.sample(z) + 1) / 2).clamp(0, 1)
        lr = bicubic_downscale(hr, factor)[0].cpu()
        r = upsample(lr, model, PulseOptions(steps=args.max_steps, early_stop=True), seed=i)
        rows.append((r.seconds, r.steps_taken, bool(r.success[0]), float(r.best_l2[0])))
        print(f"image {i}: success={rows[-1][2]} steps={r.steps_taken} seconds={r.seconds:.1f} "
              f"best_l2={rows[-1][3]:.2e}", flush=True)
    ok = [r for r in rows if r[2]]
    med = statistics.median(r[0] for r in rows)
    print(f"device={args.device} res={args.resolution} lr={args.lr_size} success={len(ok)}/{len(rows)} "
          f"median_seconds={med:.1f} median_steps={statistics.median(r[1] for r in rows)}")


if __name__ == "__main__":
    main(sys.argv[1:])
