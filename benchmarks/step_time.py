"""Seconds per PULSE step at 1024 px: full-size StyleGAN v1 with random weights, batch 1.

    python benchmarks/step_time.py [--steps 6] [--resolution 1024] [--device cpu] [--batch 1] [--no-native]

Prints the first-step time, the median of the remaining steps, and peak RSS.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch

from pulse_sr import PulseModel, PulseOptions, StyleGAN1Generator, load_model, runtime, upsample


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--model", default=None, help="benchmark a real model (e.g. 'default') instead of random weights")
    p.add_argument("--lr-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--nchw", action="store_true", help="keep activations NCHW (default: channels-last)")
    p.add_argument("--no-native", action="store_true", help="torch ops instead of the fused C epilogue")
    p.add_argument("--baseline", action="store_true",
                   help="the first implementation: reference epilogue ops, NCHW, glibc's default malloc")
    args = p.parse_args(argv)
    if args.baseline:
        os.environ["PULSE_NO_MALLOC_TUNING"] = "1"  # read by runtime.tune below
    if args.threads:
        torch.set_num_threads(args.threads)
    impl = "ref" if args.baseline else ("torch" if args.no_native else "auto")
    channels_last = not (args.nchw or args.baseline)
    torch.manual_seed(0)
    if args.model:
        model = load_model(args.model, impl=impl)
        model.generator.set_channels_last(channels_last)
        args.resolution = model.resolution
    else:
        G = StyleGAN1Generator(resolution=args.resolution, impl=impl, channels_last=channels_last)
        fit = {"mean": torch.zeros(G.w_dim), "std": torch.ones(G.w_dim)}
        model = PulseModel(G.eval().requires_grad_(False), fit, source="random")
    # The process-wide switches every entry point applies (malloc tuning on CPU), so figures stay comparable.
    model = model.to(runtime.tune(args.device))
    lr = torch.rand(3, args.lr_size, args.lr_size)
    stamps = []
    t0 = time.perf_counter()
    upsample(lr, model, PulseOptions(steps=args.steps), samples=args.batch, seed=0,
             progress=lambda s, n, info: stamps.append(time.perf_counter()))
    times = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    steady = statistics.median(times[1:]) if len(times) > 1 else times[0]
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    if args.device.startswith("cuda"):
        rss_gb = torch.cuda.max_memory_allocated() / 1e9  # report GPU memory instead
    layout = "baseline" if args.baseline else ("nchw" if args.nchw else "channels_last")
    from pulse_sr.ops.epilogue import kernels
    cpu = args.device == "cpu"
    epilogue = "c" if impl == "auto" and channels_last and cpu and kernels() is not None else \
        ("torch" if impl == "auto" else impl)
    print(f"model={args.model or 'random'} device={args.device} layout={layout} epilogue={epilogue} "
          f"res={args.resolution} "
          f"batch={args.batch} "
          f"threads={torch.get_num_threads()} "
          f"first_step_s={times[0]:.3f} steady_s_per_step={steady:.3f} "
          f"per_image_s_per_step={steady / args.batch:.3f} images_per_min_100steps={60 * args.batch / (100 * steady):.2f} "
          f"peak_mem_gb={rss_gb:.2f}")
    return steady


if __name__ == "__main__":
    main(sys.argv[1:])
