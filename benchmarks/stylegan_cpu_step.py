"""CPU seconds per PULSE step (forward + backward to W+) for StyleGAN2/3 shapes, against NVIDIA's code.

    python benchmarks/stylegan_cpu_step.py --nvidia PATH/TO/stylegan3 [--configs sg2-256,sg3r-256,sg2-1024]

``--nvidia`` is a checkout of NVlabs/stylegan3 (its code is imported from
there at run time and is not part of pulse-sr). Both sides get the same random
weights, the shapes of NVIDIA's released ``stylegan2-ffhq-256x256.pkl``,
``stylegan3-r-ffhqu-256x256.pkl`` and a 1024-px StyleGAN2 config-f, batch 1:

* NVIDIA: ``G.synthesis(ws, noise_mode='const', force_fp32=True)`` in eval mode
  (its defaults; on a CPU its custom ops fall back to their reference paths);
* pulse-sr: ``G.synthesize(ws, noise)`` with the same constant noise maps.

A step is what PULSE does: synthesize, an 8x average-pool "downscale",
a squared-error loss, and a backward pass to W+ (and to nothing else: weights
are frozen). Each measurement runs in a fresh subprocess, the two
implementations alternating, so that peak memory (ru_maxrss) is per
implementation; the figures are the median seconds per step and the peak RSS
growth over the model's own footprint. CPU flags are printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = {
    # NVIDIA's train.py settings behind the released pickles (docs/configs.md).
    "sg2-256": dict(kind="stylegan2", kwargs=dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                                                  mapping_kwargs=dict(num_layers=8), channel_base=16384,
                                                  channel_max=512, num_fp16_res=4, conv_clamp=256)),
    "sg3r-256": dict(kind="stylegan3", kwargs=dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                                                   mapping_kwargs=dict(num_layers=2), channel_base=32768,
                                                   channel_max=1024, magnitude_ema_beta=0.5 ** (32 / 20000),
                                                   conv_kernel=1, use_radial_filters=True, num_fp16_res=4,
                                                   conv_clamp=256)),
    "sg2-1024": dict(kind="stylegan2", kwargs=dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024,
                                                   img_channels=3, mapping_kwargs=dict(num_layers=8),
                                                   channel_base=32768, channel_max=512, num_fp16_res=4,
                                                   conv_clamp=256)),
}


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    keep = [f for f in flags if f.startswith(("avx", "fma", "amx"))]
    return f"{model}; {os.cpu_count()} cores; {' '.join(keep)}"


def nvidia_generator(config: str, nvidia: str):
    sys.path.insert(0, nvidia)
    spec = CONFIGS[config]
    if spec["kind"] == "stylegan2":
        from training.networks_stylegan2 import Generator
    else:
        from training.networks_stylegan3 import Generator
    return Generator(**spec["kwargs"]).eval().requires_grad_(False)


def worker(which: str, config: str, steps: int, nvidia: str, state_path: str) -> dict:
    import torch
    spec = CONFIGS[config]
    saved = torch.load(state_path, weights_only=True)
    ws0 = saved.pop("__ws__")
    if which == "nvidia":
        G = nvidia_generator(config, nvidia)
        G.load_state_dict(saved)

        def synth(ws):
            return G.synthesis(ws, noise_mode="const", force_fp32=True)
    else:
        from pulse_sr.formats.nvidia_pickle import generator_from_state
        G = generator_from_state(spec["kind"], spec["kwargs"], saved, config)
        noise = G.make_noise(1, "const")

        def synth(ws):
            return G.synthesize(ws, noise)
    del saved
    factor = spec["kwargs"]["img_resolution"] // 8
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        ws = ws0.clone().requires_grad_(True)
        lr = torch.nn.functional.avg_pool2d((synth(ws) + 1) / 2, factor)
        loss = (lr - 0.5).square().mean()
        (grad,) = torch.autograd.grad(loss, ws)
        return grad

    step()  # warm-up (allocator, oneDNN primitive cache)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": times, "peak_rss_mib": peak / 1024, "step_rss_mib": (peak - before) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nvidia", required=True, help="path to a NVlabs/stylegan3 checkout")
    p.add_argument("--configs", default="sg2-256,sg3r-256,sg2-1024")
    p.add_argument("--rounds", type=int, default=2, help="subprocess pairs per config (alternating)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per subprocess")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--state", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.nvidia, args.state)))
        return
    print(f"CPU: {cpu_flags()}; torch threads: default")
    import tempfile

    import torch
    tmp = tempfile.mkdtemp()
    for config in args.configs.split(","):
        # One set of random weights (and one W+) for both sides, read from disk by each worker.
        torch.manual_seed(0)
        G = nvidia_generator(config, args.nvidia)
        state_path = os.path.join(tmp, f"{config}.pt")
        torch.save({**G.state_dict(), "__ws__": G.mapping(torch.randn(1, 512), None)}, state_path)
        del G
        runs = {"nvidia": [], "pulse-sr": []}
        for _ in range(args.rounds):
            for which in ("nvidia", "pulse-sr"):
                out = subprocess.run([sys.executable, __file__, "--nvidia", args.nvidia, "--steps", str(args.steps),
                                      "--worker", which, config, "--state", state_path], capture_output=True, text=True, check=True)
                runs[which].append(json.loads(out.stdout.strip().splitlines()[-1]))
        summary = {}
        for which, rs in runs.items():
            secs = [s for r in rs for s in r["seconds"]]
            summary[which] = (statistics.median(secs), max(r["peak_rss_mib"] for r in rs),
                              max(r["step_rss_mib"] for r in rs))
            print(f"{config:9s} {which:9s} {summary[which][0]:7.2f} s/step (median of {len(secs)}), "
                  f"peak RSS {summary[which][1]:7.0f} MiB, step adds {summary[which][2]:6.0f} MiB")
        print(f"{config:9s} speed-up {summary['nvidia'][0] / summary['pulse-sr'][0]:.2f}x")


if __name__ == "__main__":
    main()
