"""Can a truncated synthesis stand in for the full one during the search (coarse-to-fine)?

    python benchmarks/proxy_fidelity.py                          # full-size random 1024-px model, x64
    python benchmarks/proxy_fidelity.py --model default --lr-size 8 --truncate 16 32

Coarse-to-fine would run most PULSE steps through the layers up to a resolution
r and map those features to RGB with a cheap proxy, on the premise that the top
layers barely change the LR downscale. This measures that premise. For each r
it fits a least-squares 1x1 proxy (features -> RGB, compared after downscaling
both to the LR size) on the generator's own samples, then prints

* R^2 of the proxy's LR image on training and held-out samples, and
* the cosine between the gradient of the proxy loss (with the full model's
  residual as a fixed offset, so both losses agree at the current point) and
  the true gradient, over several (start, target) pairs.

A held-out R^2 near 1 and cosines near 1 would make coarse-to-fine worth
building; near 0 the coarse steps would walk in the wrong direction.
"""

import argparse
import sys
import time

import torch

from pulse_sr import StyleGAN1Generator, bicubic_downscale
from pulse_sr.runtime import tune_malloc
from pulse_sr.search.prior import compute_gaussian_fit, latent_to_w


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None, help="a real model (e.g. 'default'); default: random full-size weights")
    p.add_argument("--resolution", type=int, default=1024, help="for the random model")
    p.add_argument("--lr-size", type=int, default=16)
    p.add_argument("--truncate", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--samples", type=int, default=24, help="samples for fitting (3/4) and held-out R^2 (1/4)")
    p.add_argument("--pairs", type=int, default=4, help="(start, target) pairs for the gradient cosine")
    args = p.parse_args(argv)
    tune_malloc()
    torch.manual_seed(0)
    if args.model:
        import pulse_sr
        model = pulse_sr.load_model(args.model)
        G, fit = model.generator, model.gaussian_fit
    else:
        G = StyleGAN1Generator(resolution=args.resolution)
        fit = compute_gaussian_fit(G, 100_000, chunk=25_000)
    G.eval().requires_grad_(False)
    S, R, h = G.synthesis, G.resolution, args.lr_size
    layer_res = [layer.resolution for layer in S.layers]
    zeros = lambda b: [None] * len(layer_res)  # noqa: E731

    def run(lat, num_layers=None):
        out = S(latent_to_w(lat, fit), zeros(lat.shape[0]), num_layers=num_layers)
        return (out + 1) / 2 if num_layers is None else out.float().contiguous()

    def to_lr(x):
        return bicubic_downscale(x, x.shape[-1] // h) if x.shape[-1] > h else x

    g = torch.Generator().manual_seed(1)
    n, n_fit = args.samples, args.samples * 3 // 4
    lat = torch.randn(n, G.num_ws, G.w_dim, generator=g)
    t0 = time.perf_counter()
    with torch.no_grad():
        target = torch.cat([to_lr(run(lat[i:i + 1])) for i in range(n)])
    print(f"model={args.model or 'random'} res={R} lr={h} samples={n} ({time.perf_counter() - t0:.0f} s for the full"
          f" forwards)", flush=True)
    rows = target.permute(0, 2, 3, 1).reshape(-1, 3)
    split = n_fit * h * h
    for r in args.truncate:
        if r not in layer_res or r >= R:
            print(f"truncate at {r} px: skipped (not an intermediate resolution of this model)")
            continue
        nl = max(i for i, lr_ in enumerate(layer_res) if lr_ == r) + 1
        with torch.no_grad():
            feats = torch.cat([to_lr(run(lat[i:i + 1], nl)) for i in range(n)])
        c = feats.shape[1]
        design = torch.cat([feats.permute(0, 2, 3, 1).reshape(-1, c), torch.ones(len(rows), 1)], 1)
        proxy = torch.linalg.lstsq(design[:split], rows[:split]).solution
        pred = design @ proxy

        def r2(s):
            return float(1 - (pred[s] - rows[s]).square().sum() / (rows[s] - rows[s].mean(0)).square().sum())

        cosines = []
        for k in range(args.pairs):
            y = target[n - 1 - k:n - k]
            start = lat[k:k + 1].clone().requires_grad_(True)
            full = to_lr(run(start))
            g_true, = torch.autograd.grad((full - y).square().mean(), start)
            f = to_lr(run(start, nl))
            approx = (torch.cat([f.permute(0, 2, 3, 1).reshape(-1, c), torch.ones(h * h, 1)], 1) @ proxy)
            approx = approx.reshape(1, h, h, 3).permute(0, 3, 1, 2)
            loss = (approx + (full - approx).detach() - y).square().mean()
            g_proxy, = torch.autograd.grad(loss, start)
            cosines.append(float(torch.nn.functional.cosine_similarity(g_true.flatten(), g_proxy.flatten(), 0)))
        print(f"truncate at {r} px (C={c}): R2 fit {r2(slice(0, split)):.3f} held-out {r2(slice(split, None)):.3f}"
              f"  grad cosine mean {sum(cosines) / len(cosines):.2f} min {min(cosines):.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
