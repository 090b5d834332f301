"""Success of `pulse upsample` (bundled model, one run each, default settings) on inputs that are
not the paper's exact bicubic downscale, made from real UTKFace test faces.

    python benchmarks/operator_success.py ../shared/data/utkface/test [--n 100] [--seed 0]

Each face is resized to the model's 64×64 frame (PIL bicubic), then turned into:
* `pixelated`: block 8 mosaics at random grid offsets, at 64×64 (detected: box:8@ox,oy);
* `pil13`, `pil24`: 13×13 and 24×24 made by PIL's own bicubic resize (resize:13x13 / 24x24);
* `gray8`: the exact ×8 bicubic downscale in grayscale (bicubic:8+gray).
Prints, per setting, how many results are within eps and whether the detected operator is right.
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from pulse_sr.images import load_rgb, pil_to_tensor, save_image
from pulse_sr.ops.operators import Box, Gray, is_gray
from pulse_sr.ops.resample import bicubic_downscale


def make_inputs(files, root: Path, seed: int) -> dict:
    rng = random.Random(seed)
    expected = {k: {} for k in ("pixelated", "pil13", "pil24", "gray8")}
    for p in files:
        img = load_rgb(p).resize((64, 64), Image.BICUBIC)
        x = pil_to_tensor(img)
        tail = "+gray" if is_gray(x) else ""  # some UTKFace photos are grayscale: gray is then right
        ox, oy = rng.randrange(8), rng.randrange(8)
        save_image(Box(8, (ox, oy), (64, 64))(x[None])[0].clamp(0, 1), root / "pixelated" / f"{p.stem}.png")
        expected["pixelated"][p.stem] = f"box:8@{ox},{oy}{tail}"
        for s in (13, 24):
            save_image(img.resize((s, s), Image.BICUBIC), root / f"pil{s}" / f"{p.stem}.png")
            expected[f"pil{s}"][p.stem] = f"resize:{s}x{s}{tail}"
        save_image(Gray()(bicubic_downscale(x[None], 8))[0].clamp(0, 1), root / "gray8" / f"{p.stem}.png")
        expected["gray8"][p.stem] = "bicubic:8+gray"
    return expected


def batched(folder: Path, expected: dict, batch: int, t0: float) -> None:
    import torch

    from pulse_sr import load_model, runtime, upsample
    from pulse_sr.ops.operators import auto_operator

    runtime.tune("cpu")
    model = load_model("default")
    groups: dict = {}
    right = 0
    for f in sorted(folder.iterdir()):
        x = pil_to_tensor(load_rgb(f))
        op = auto_operator(x, model.resolution)
        spec = op.spec()
        right += spec == expected[f.stem]
        groups.setdefault(spec, []).append((x, op))
    ok, l2, n = 0, [], 0
    for spec, items in groups.items():
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            res = upsample(torch.stack([x for x, _ in chunk]), model, seed=0, operator=chunk[0][1])
            ok += int(res.success.sum())
            l2 += res.best_l2.tolist()
            n += len(chunk)
    l2.sort()
    print(f"{folder.name}: {ok}/{n} within eps (library, batches of up to {batch} by operator); operator right "
          f"for {right}/{n}; median best L2 {l2[len(l2) // 2]:.2e}; {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", default="pixelated,pil13,pil24,gray8")
    ap.add_argument("--batch", type=int, default=0,
                    help="Search inputs whose detected operator is the same in batches of this many through the "
                         "library (faster on a CPU; results then depend on the batching) instead of one "
                         "`pulse upsample` run (each input its own batch).")
    args = ap.parse_args(argv)
    files = sorted(p for p in Path(args.data_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = random.Random(args.seed).sample(files, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        expected = make_inputs(files, root, args.seed)
        for setting in args.settings.split(","):
            t = time.perf_counter()
            if args.batch:
                batched(root / setting, expected[setting], args.batch, t)
                continue
            out = root / f"out-{setting}"
            r = subprocess.run([sys.executable, "-m", "pulse_sr", "upsample", str(root / setting), "--out", str(out),
                                "--seed", "0", "--quiet"], capture_output=True, text=True)
            rep = json.loads((out / "report.json").read_text())
            ok = sum(e["success"] for e in rep["results"])
            right = sum(e.get("spec") == expected[setting][Path(e["input"]).stem] for e in rep["results"])
            l2 = sorted(e["best_l2"] for e in rep["results"])
            print(f"{setting}: {ok}/{len(rep['results'])} within eps={rep['results'][0]['eps']}; operator right for "
                  f"{right}/{len(rep['results'])}; median best L2 {l2[len(l2) // 2]:.2e}; "
                  f"{time.perf_counter() - t:.0f} s (exit {r.returncode})", flush=True)


if __name__ == "__main__":
    main()
