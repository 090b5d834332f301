"""How well the out-of-domain test tells faces from non-faces, and how fair it is to real faces.

    python benchmarks/domain_test.py ../shared/data/utkface/test [--n 500] [--scales 8,4] [--out domain.json]

For each scale (×8: 8×8, ×4: 16×16, the exact bicubic downscale of 64×64 crops) and colour mode:
* colour faces: `--n` UTKFace test crops; colour non-faces: 12 random square crops of each of
  scikit-image's colour sample images without a face (cat, coffee, colour wheel, Hubble deep
  field, immunohistochemistry, logo, rocket, retina);
* gray faces: the same UTKFace crops in gray plus the 100 faces of `skimage.data.lfw_subset()`;
  gray non-faces: the 100 non-face patches of `lfw_subset()` plus 12 crops of each gray sample
  image (brick, clock, coins, grass, gravel, horse, moon, page, text, cell, blobs, phantom).
Gray inputs go through `+gray` (the operator the CLI detects for them), so gray is compared
with gray. Prints AUROC (p-value as the score), flag rates at alpha = 0.01 (calibrated on the
model's own samples only) and the false-flag rate per UTKFace group.
"""

import argparse
import glob
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pulse_sr import load_model, runtime
from pulse_sr.images import load_rgb, pil_to_tensor
from pulse_sr.ops.operators import as_operator
from pulse_sr.trust.domain import calibrate

RACES = ["White", "Black", "Asian", "Indian", "Others"]
COLOUR = ["chelsea", "coffee", "colorwheel", "hubble_deep_field", "immunohistochemistry", "logo", "rocket", "retina"]
GRAY = ["brick", "clock", "coins", "grass", "gravel", "horse", "moon", "page", "text", "cell", "binary_blobs",
        "shepp_logan_phantom"]


def _crops(arr, n, rng):
    img = Image.fromarray(arr)
    w, h = img.size
    out = []
    for _ in range(n):
        s = rng.randint(min(w, h) // 4, min(w, h))
        x, y = rng.randint(0, w - s), rng.randint(0, h - s)
        out.append(pil_to_tensor(img.crop((x, y, x + s, y + s)).convert("RGB").resize((64, 64), Image.BICUBIC)))
    return out


def _u8(x):
    x = np.asarray(x)
    if x.dtype != np.uint8:
        x = (np.clip(x, 0, 1) * 255).round().astype(np.uint8) if x.max() <= 1.0 else x.astype(np.uint8)
    if x.ndim == 3 and x.shape[2] == 4:
        x = x[:, :, :3]
    return x


def gray3(x):
    g = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    return g.expand(3, -1, -1).clone()


def sets(folder, n):
    import skimage.data as data

    rng = random.Random(0)
    files = sorted(glob.glob(str(Path(folder) / "*.jpg")))
    random.Random(0).shuffle(files)
    faces = [(pil_to_tensor(load_rgb(f).resize((64, 64), Image.BICUBIC)), Path(f).name) for f in files[:n]]
    colour_non = [c for name in COLOUR for c in _crops(_u8(getattr(data, name)()), 12, rng)]
    gray_non = [gray3(c) for name in GRAY for c in _crops(_u8(getattr(data, name)()), 12, rng)]
    lfw = data.lfw_subset()
    lfw_t = [pil_to_tensor(Image.fromarray(_u8(a)).convert("RGB").resize((64, 64), Image.BICUBIC)) for a in lfw]
    return {"colour": ([f for f, _ in faces], colour_non, [nm for _, nm in faces]),
            "gray": ([gray3(f) for f, _ in faces] + lfw_t[:100], gray_non + lfw_t[100:],
                     [nm for _, nm in faces] + ["lfw"] * 100)}


def auroc(pos, neg):
    """P(score of a non-face < score of a face), scores being p-values (ties count half)."""
    pos, neg = np.asarray(pos), np.asarray(neg)
    less = (neg[:, None] < pos[None, :]).mean()
    ties = (neg[:, None] == pos[None, :]).mean()
    return float(less + 0.5 * ties)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--scales", default="8,4")
    p.add_argument("--out", default="domain_test.json")
    args = p.parse_args(argv)
    runtime.tune("cpu")
    model = load_model("default")
    data = sets(args.folder, args.n)
    out = {}
    for scale in [int(s) for s in args.scales.split(",")]:
        size = 64 // scale
        for mode, (faces, non, names) in data.items():
            spec = f"bicubic:{scale}" + ("+gray" if mode == "gray" else "")
            op = as_operator(spec, (size, size), 64)
            test = calibrate(model, op)
            pf = test.p_value(op(torch.stack(faces)).clamp(0, 1)).numpy()
            pn = test.p_value(op(torch.stack(non)).clamp(0, 1)).numpy()
            groups = {}
            for pv, nm in zip(pf, names):
                parts = nm.split("_")
                key = "lfw" if nm == "lfw" else f"race:{RACES[int(parts[2])]}"
                groups.setdefault(key, []).append(pv < test.alpha)
                if nm != "lfw":
                    groups.setdefault(f"gender:{['male', 'female'][int(parts[1])]}", []).append(pv < test.alpha)
            row = {"auroc": auroc(pf, pn), "face_flag_rate": float((pf < test.alpha).mean()),
                   "nonface_flag_rate": float((pn < test.alpha).mean()), "n_faces": len(pf), "n_nonfaces": len(pn),
                   "face_flags_by_group": {g: [int(sum(v)), len(v)] for g, v in sorted(groups.items())},
                   "worst_group_flag_rate": max(sum(v) / len(v) for v in groups.values()),
                   "median_p_faces": float(np.median(pf)), "median_p_nonfaces": float(np.median(pn))}
            out[f"x{scale}-{mode}"] = row
            print(f"x{scale} {mode}: " + json.dumps({k: v for k, v in row.items() if k != "face_flags_by_group"}),
                  flush=True)
            print("   groups:", json.dumps(row["face_flags_by_group"]), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
