"""Copy a seeded random sample of N images of a folder into another folder.

    python scripts/make_eval_subset.py ../shared/data/utkface/test eval-200 --n 200 --seed 0

The evaluation figures in MODEL_CARD.md use this sample (seed 0, 200 images of
utkface/test): a random sample, because the first N by name are ordered by age.
"""

import argparse
import random
import shutil
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("src")
p.add_argument("dst")
p.add_argument("--n", type=int, default=200)
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()
files = sorted(f for f in Path(args.src).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
chosen = sorted(random.Random(args.seed).sample(files, args.n))
Path(args.dst).mkdir(parents=True, exist_ok=True)
for f in chosen:
    shutil.copy2(f, Path(args.dst) / f.name)
print(f"copied {len(chosen)} of {len(files)} images to {args.dst}")
