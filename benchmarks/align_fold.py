"""`pulse upsample --align` on LR photos: the warp folded into the operator against aligning and
downscaling first, with the LR-space error of both measured in the photo's own pixels.

    python benchmarks/align_fold.py [--utkface ../shared/data/utkface/test] [--n 10] [--size 40]

Photos: scikit-image's astronaut shrunk to 96, 128 and 160 px, and N UTKFace test
crops shrunk to --size px and padded with their edge pixels to twice that (faces smaller
than the 64-px model's frame: LR photos for it). Both paths run the bundled model with the same seed and default
settings. The error of a result x is the masked MSE between Warp(x) and the
photo region Warp measures, so both are judged on the photo's pixels.
"""

import argparse
import random
import statistics
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from pulse_sr import load_model, runtime
from pulse_sr.images import load_rgb, read_image
from pulse_sr.pipelines.upsample import AlignMode, UpsampleJob, prepare_inputs, upsample_files
from pulse_sr.search import PulseOptions
from pulse_sr.search.losses import l2_per_sample


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--utkface", default=None)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--size", type=int, default=40, help="UTKFace crops are shrunk to this, then padded to 2x")
    args = ap.parse_args(argv)
    runtime.tune("cpu")
    model = load_model("default")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = []
        from skimage.data import astronaut
        for s in (96, 128, 160):
            p = tmp / f"astronaut{s}.png"
            Image.fromarray(astronaut()).resize((s, s), Image.LANCZOS).save(p)
            photos.append(p)
        if args.utkface:
            files = sorted(q for q in Path(args.utkface).iterdir() if q.suffix.lower() in (".jpg", ".png"))
            for q in random.Random(0).sample(files, args.n):
                p = tmp / f"{q.stem}_{args.size}.png"
                small = np.asarray(load_rgb(q).resize((args.size, args.size), Image.LANCZOS))
                pad = args.size // 2  # a photo around the face (its edge pixels repeated): the face is LR in it
                Image.fromarray(np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="edge")).save(p)
                photos.append(p)
        rows = []
        for p in photos:
            faces = prepare_inputs(p, p.stem, model, UpsampleJob(align=AlignMode.WARP))
            if not faces or faces[0].operator.ops[0].name != "warp":
                print(f"{p.name}: no LR face for the warp path; skipped")
                continue
            y, op = faces[0].lr, faces[0].operator
            err = {}
            for mode in ("warp", "resample"):
                out = tmp / f"out-{mode}-{p.stem}"
                rep = upsample_files([p], model, out, UpsampleJob(PulseOptions(), seed=0, align=AlignMode(mode)))
                if not rep.results:
                    break
                x = read_image(out / rep.results[0].output)[None]
                err[mode] = float(l2_per_sample(op(x), y[None], op.mask)[0])
            if len(err) == 2:
                rows.append(err)
                print(f"{p.name}: face region {y.shape[2]}x{y.shape[1]} px; MSE in the photo's pixels: "
                      f"warp {err['warp']:.2e}, resample {err['resample']:.2e}", flush=True)
        for mode in ("warp", "resample"):
            v = [r[mode] for r in rows]
            print(f"{mode}: median {statistics.median(v):.2e}, mean {statistics.fmean(v):.2e}, within 2e-3 "
                  f"{sum(e <= 2e-3 for e in v)}/{len(v)}")


if __name__ == "__main__":
    main()
