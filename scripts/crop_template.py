"""Measure a model's crop convention: the mean landmark positions over its training crops.

Runs pulse_sr's face detector over N images of a folder (each resized to the
size the crops had before training, 200x200 for UTKFace's aligned crops),
averages the five landmarks of the largest face, and scales them to the model's
resolution. Prints the template as JSON, ready for the model's
``extras['crop_template']``; statistics go to stderr.

    python scripts/crop_template.py --folder /work/shared/data/utkface/train -n 500 --size 64
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from pulse_sr.align import LANDMARK_NAMES, detect_faces, load_image
from pulse_sr.errors import InputImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default="/work/shared/data/utkface/train", type=Path)
    ap.add_argument("-n", "--num", type=int, default=500, help="images to measure (a seeded random sample)")
    ap.add_argument("--source-size", type=int, default=200, help="side the crops are resized to before measuring")
    ap.add_argument("--size", type=int, default=64, help="side of the model's crops; the template is scaled to it")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        print(f"{args.folder}: no images", file=sys.stderr)
        return 2
    random.Random(args.seed).shuffle(files)
    files = files[:args.num]

    points, missed = [], 0
    for path in files:
        try:
            img = load_image(path)
        except InputImageError as exc:
            print(f"skipping {exc}", file=sys.stderr)
            continue
        if img.size != (args.source_size, args.source_size):
            img = img.resize((args.source_size, args.source_size), resample=3)  # bicubic
        faces = detect_faces(img)
        if not faces:
            missed += 1
            continue
        points.append(faces[0].points())
    if not points:
        print("no face found in any image", file=sys.stderr)
        return 3
    pts = np.stack(points) * (args.size / args.source_size)
    mean, std = pts.mean(0), pts.std(0)
    template = {name: [round(float(x), 3), round(float(y), 3)] for name, (x, y) in zip(LANDMARK_NAMES, mean)}
    template["size"] = args.size
    print(f"{len(points)} of {len(files)} images had a face ({missed} without); per-landmark std in "
          f"{args.size}-px units:", file=sys.stderr)
    for name, (sx, sy) in zip(LANDMARK_NAMES, std):
        print(f"  {name:12s} x {sx:.2f}  y {sy:.2f}", file=sys.stderr)
    print(json.dumps(template))
    return 0


if __name__ == "__main__":
    sys.exit(main())
