"""Faces found and seconds per image: dlib's HOG detector, its CNN detector, and
detect_faces' default (HOG, then the CNN when HOG finds nothing).

    python benchmarks/align_detectors.py [--n 200] [--data /work/shared/data/utkface/test]

Images: the first ``--n`` UTKFace crops (200x200, aligned), sorted by name, each
upscaled x2 (bicubic, 400x400) and given a 100-px edge-replicated border
(600x600), so the face is well inside the frame. Every 4th of them (index 0, 4,
8, ...: 50 of 200) is also used transformed, cycling through: rotated +30
degrees (counter-clockwise), rotated -30 degrees (both about the centre,
bicubic, the frame kept 600x600 and its corners filled mid-grey), and flipped
left-right. Sets: ``plain`` (all n, untransformed), ``rot+30``, ``rot-30``,
``flip`` and ``transformed`` (those three together).

Detectors, each timed alone per image (image preparation not counted):
``hog`` is ``detect_faces(img, cnn_fallback=False)``; ``cnn`` is the CNN path
of detect_faces by itself (the same pixel budget, landmarks and upright
re-check); ``default`` is ``detect_faces(img)``. ``found`` counts images with
at least one face; for the CNN, ``proposed`` counts images where it returned
at least one box before the re-check, out of ``ran`` images it ran on.
Prints one line per (set, detector), then the images each detector missed.
"""

import argparse
import os
import statistics
import time

import numpy as np
from PIL import Image, ImageOps

from pulse_sr import align as A
from pulse_sr.align import detection

SETS = ("plain", "rot+30", "rot-30", "flip", "transformed")
DETECTORS = ("hog", "cnn", "default")
TRANSFORMS = ("rot+30", "rot-30", "flip")


def bordered(path: str) -> Image.Image:
    """The crop upscaled x2 with a 100-px edge-replicated border: 600x600."""
    img = Image.open(path).convert("RGB").resize((400, 400), Image.BICUBIC)
    return Image.fromarray(np.pad(np.asarray(img), ((100, 100), (100, 100), (0, 0)), mode="edge"))


def transformed(img: Image.Image, how: str) -> Image.Image:
    if how == "flip":
        return ImageOps.mirror(img)
    return img.rotate(float(how[3:]), resample=Image.BICUBIC, fillcolor=(128, 128, 128))


class CountingCNN:
    """dlib's CNN detector, counting the calls and the calls that proposed a box."""

    def __init__(self, cnn):
        self.cnn, self.ran, self.proposed = cnn, 0, 0

    def __call__(self, arr, upsample):
        boxes = self.cnn(arr, upsample)
        self.ran += 1
        self.proposed += bool(len(boxes))
        return boxes


def cnn_only(img: Image.Image):
    """detect_faces' CNN path alone: the same pixel budget, landmarks and re-check.
    These 600-px images are under detect_faces' max_side, so its shrunk copy is the image."""
    return detection._cnn_faces(img, img, detection._MIN_SCORE)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--data", default="/work/shared/data/utkface/test")
    args = p.parse_args(argv)

    names = sorted(f for f in os.listdir(args.data) if f.lower().endswith((".jpg", ".jpeg", ".png")))[:args.n]
    detection._dlib_models()
    cnn = detection._cnn_detector()
    if cnn is None:
        raise SystemExit("dlib's CNN face model is not installed: pip install 'pulse-sr[align]'")
    counting = CountingCNN(cnn)
    detection._cnn_detector = lambda: counting  # So that the CNN's own proposals can be counted.
    run = {"hog": lambda im: A.detect_faces(im, cnn_fallback=False), "cnn": cnn_only,
           "default": A.detect_faces}

    # (set, detector) -> list of (name, faces found, seconds, CNN ran, CNN proposed)
    rows = {(s, d): [] for s in SETS for d in DETECTORS}
    t_start = time.perf_counter()
    for i, name in enumerate(names):
        base = bordered(os.path.join(args.data, name))
        jobs = [("plain", base)]
        if i % 4 == 0:
            how = TRANSFORMS[(i // 4) % 3]
            jobs.append((how, transformed(base, how)))
        for set_name, img in jobs:
            for det in DETECTORS:
                ran, proposed = counting.ran, counting.proposed
                t = time.perf_counter()
                faces = run[det](img)
                dt = time.perf_counter() - t
                row = (name, len(faces), dt, counting.ran - ran, counting.proposed - proposed)
                rows[(set_name, det)].append(row)
                if set_name != "plain":
                    rows[("transformed", det)].append(row)
        if (i + 1) % 20 == 0:
            print(f"# {i + 1}/{len(names)} images, {time.perf_counter() - t_start:.0f} s", flush=True)

    print(f"# {cpu_model()}, dlib {detection._dlib_models()[0].__version__}, "
          f"CNN budget {detection._CNN_MAX_PIXELS} px, {len(names)} images from {args.data}")
    for s in SETS:
        for d in DETECTORS:
            r = rows[(s, d)]
            if not r:
                continue
            times = [x[2] for x in r]
            found = sum(x[1] > 0 for x in r)
            cnn_note = (f"  cnn ran={sum(x[3] for x in r):3d} proposed={sum(x[4] > 0 for x in r):3d}"
                        if d != "hog" else "")
            print(f"set={s:<11} n={len(r):3d}  detector={d:<7}  "
                  f"found={found:3d} ({100 * found / len(r):5.1f}%)  median={statistics.median(times):6.3f} s  total={sum(times):7.1f} s{cnn_note}")
    print("# missed (set, detector: images with no face)")
    for s in SETS[:4]:
        for d in DETECTORS:
            missed = [x[0] for x in rows[(s, d)] if x[1] == 0]
            if missed:
                print(f"#   {s} {d}: {' '.join(missed)}")


if __name__ == "__main__":
    main()
