"""How often the mosaic detector recovers block size and grid offset, and how often it fires on
images that are not mosaics, over real face crops.

    python benchmarks/mosaic_detector.py ../shared/data/utkface/test [--n 500] [--seed 0]

For each of N crops (drawn with the seed): a mosaic with a random block size
in 2..16 and random offsets at the crop's own 200×200 size, the same saved as
JPEG quality 90, and the crop downscaled with PIL's bicubic to 64×64 and to
16×16 (not mosaics: any detection is false). Prints the rates.
"""

import argparse
import io
import random
import sys
import time
from pathlib import Path

from PIL import Image

from pulse_sr.images import load_rgb, pil_to_tensor, tensor_to_pil
from pulse_sr.ops.operators import Box, detect_mosaic


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files = sorted(p for p in Path(args.data_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < args.n:
        sys.exit(f"{args.data_dir}: {len(files)} images, fewer than --n {args.n}")
    rng = random.Random(args.seed)
    picks = rng.sample(files, args.n)
    exact = exact_jpeg = false_64 = false_16 = 0
    misses = []
    t = time.perf_counter()
    for i, path in enumerate(picks):
        img = load_rgb(path)
        x = pil_to_tensor(img)
        b = rng.randint(2, 16)
        ox, oy = rng.randrange(b), rng.randrange(b)
        mosaic = Box(b, (ox, oy), tuple(x.shape[-2:]))(x[None])[0].clamp(0, 1)
        mosaic8 = pil_to_tensor(tensor_to_pil(mosaic))  # as saved: 8-bit
        truth = (b, (ox, oy))
        got = detect_mosaic(mosaic8)
        exact += got == truth
        if got != truth:
            misses.append((path.name, truth, got))
        exact_jpeg += detect_mosaic(pil_to_tensor(jpeg(tensor_to_pil(mosaic), 90))) == truth
        false_64 += detect_mosaic(pil_to_tensor(img.resize((64, 64), Image.BICUBIC))) is not None
        false_16 += detect_mosaic(pil_to_tensor(img.resize((16, 16), Image.BICUBIC))) is not None
    n = args.n
    print(f"{n} UTKFace crops (seed {args.seed}), blocks 2-16, random offsets, {time.perf_counter() - t:.0f} s")
    print(f"mosaic, PNG:      block and offset exact for {exact}/{n} = {100 * exact / n:.1f} %")
    print(f"mosaic, JPEG q90: block and offset exact for {exact_jpeg}/{n} = {100 * exact_jpeg / n:.1f} %")
    print(f"not mosaics, bicubic 64x64: {false_64}/{n} detected (false); 16x16: {false_16}/{n}")
    for m in misses[:10]:
        print("  missed:", *m)


if __name__ == "__main__":
    main()
