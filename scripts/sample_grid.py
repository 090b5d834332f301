"""Write a grid of random samples of a model (docs/samples.jpg for the bundled one).

    python scripts/sample_grid.py --model default --out docs/samples.jpg --rows 4 --cols 8 --psi 1.0
"""

import argparse

import torch

import pulse_sr
from pulse_sr.images import make_grid, tensor_to_pil

p = argparse.ArgumentParser()
p.add_argument("--model", default="default")
p.add_argument("--out", default="docs/samples.jpg")
p.add_argument("--rows", type=int, default=4)
p.add_argument("--cols", type=int, default=8)
p.add_argument("--psi", type=float, default=1.0, help="truncation psi (1 = none)")
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
G = pulse_sr.load_model(args.model).generator
z = torch.randn(args.rows * args.cols, G.z_dim, generator=torch.Generator().manual_seed(args.seed))
with torch.no_grad():
    imgs = ((G.sample(z, truncation_psi=args.psi, noise_mode="const") + 1) / 2).clamp(0, 1)
rows = [list(imgs[r * args.cols:(r + 1) * args.cols]) for r in range(args.rows)]
tensor_to_pil(make_grid(rows)).save(args.out, quality=92)
print(f"wrote {args.out}")
