"""`--preset paper` against the adaptive search, on the bundled model, both alternating batch by batch.

    python benchmarks/adaptive_search.py ../shared/data/utkface/test --eval-subset eval-200 \
        [--sets x4,pil24,pil13,pixelated,gray8] [--n 100] [--n-small 50] [--budget 200] [--batch 16] \
        [--out adaptive.json]

Sets (faces resized to the model's 64×64 frame with PIL bicubic first, as benchmarks/operator_success.py):
* `x4`: the exact ×4 bicubic downscale (16×16) of every image of the eval subset
  (`python scripts/make_eval_subset.py ../shared/data/utkface/test eval-200 --n 200 --seed 0`);
* `pil24`, `pil13`: `--n` test faces PIL-resized to 24×24 and 13×13 (operator resize:S×S);
* `pixelated`: `--n-small` faces as block-8 mosaics at random offsets (box:8@ox,oy; one input per batch);
* `gray8`: `--n-small` faces, exact ×8 bicubic in grayscale (bicubic:8+gray).

Every batch runs both searches with the same inputs and seeds (seed 0 for every input, one sample),
each arm first in turn from batch to batch. The arms (`--arms`) are `paper` (`--preset paper`,
100 steps), `adaptive` (`--preset adaptive` with its defaults: a cap of 100 generator passes per
input, the paper's cost) and `adaptive:budget=200` (twice the cap, which it spends only on
inputs still above eps, so its mean cost can stay below the paper's).
Per set it prints success, per-group success (UTKFace labels) and the largest gap, mean wall seconds
per input, median seconds to eps (first pass within eps times the batch's mean seconds per pass),
success per CPU-second, and for `x4` the FD-dlib of both sets of results against the real crops of
the folder, with a paired bootstrap of the difference (same resampled inputs for both searches).
"""

import argparse
import glob
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from pulse_sr import load_model, runtime, upsample
from pulse_sr.images import load_rgb, pil_to_tensor
from pulse_sr.ops.operators import Box, Gray
from pulse_sr.ops.resample import bicubic_downscale
from pulse_sr.search import PulseOptions

RACES = ["White", "Black", "Asian", "Indian", "Others"]


def _labels(name: str) -> dict:
    parts = Path(name).name.split("_")
    try:
        return {"gender": ["male", "female"][int(parts[1])], "race": RACES[int(parts[2])]}
    except (IndexError, ValueError):
        return {}


def make_set(kind: str, args) -> list:
    """[(name, lr tensor (3, h, w), operator spec or None, labels)]."""
    if kind == "x4":
        files = sorted(glob.glob(str(Path(args.eval_subset) / "*.jpg")))
        out = []
        for f in files:
            hr = pil_to_tensor(load_rgb(f).resize((64, 64), Image.BICUBIC))
            out.append((Path(f).name, bicubic_downscale(hr[None], 4)[0], None, _labels(f)))
        return out
    files = sorted(glob.glob(str(Path(args.folder) / "*.jpg")))
    random.Random(0).shuffle(files)
    files = files[:args.n if kind.startswith("pil") else args.n_small]
    rng = random.Random(1)
    out = []
    for f in files:
        img = load_rgb(f).resize((64, 64), Image.BICUBIC)
        x = pil_to_tensor(img)
        if kind.startswith("pil"):
            s = int(kind[3:])
            out.append((Path(f).name, pil_to_tensor(img.resize((s, s), Image.BICUBIC)), f"resize:{s}x{s}", _labels(f)))
        elif kind == "pixelated":
            ox, oy = rng.randrange(8), rng.randrange(8)
            out.append((Path(f).name, Box(8, (ox, oy), (64, 64))(x[None])[0].clamp(0, 1), f"box:8@{ox},{oy}",
                        _labels(f)))
        elif kind == "gray8":
            out.append((Path(f).name, Gray()(bicubic_downscale(x[None], 8))[0].clamp(0, 1), "bicubic:8+gray",
                        _labels(f)))
    return out


def batches(items, size):
    groups = {}
    for it in items:
        groups.setdefault(it[2], []).append(it)
    for spec, group in groups.items():
        for i in range(0, len(group), size):
            yield spec, group[i:i + size]


def run_one(model, batch, spec, opts):
    lr = torch.stack([b[1] for b in batch])
    res = upsample(lr, model, opts, seed=[0] * len(batch), operator=spec)
    n = len(batch)
    if res.passes:
        total = sum(res.passes)
        per_pass = res.seconds / total
        to_eps = [p * per_pass if ok else None for p, ok in zip(res.passes, res.success.tolist())]
    else:
        per_pass = res.seconds / (res.steps_taken * n)
        hits = res.l2_history <= res.eps
        to_eps = [(int(hits[:, j].nonzero()[0]) + 1) * per_pass if ok else None
                  for j, ok in enumerate(res.success.tolist())]
    rows = []
    for j, b in enumerate(batch):
        rows.append({"name": b[0], "labels": b[3], "success": bool(res.success[j]), "best_l2": float(res.best_l2[j]),
                     "seconds": res.seconds / n, "to_eps": to_eps[j],
                     "passes": res.passes[j] if res.passes else res.steps_taken,
                     "stage": res.stages[j] if res.stages else "w+"})
    return rows, res.images


def summarize(rows) -> dict:
    n = len(rows)
    ok = sum(r["success"] for r in rows)
    secs = sum(r["seconds"] for r in rows)
    groups = {}
    for key in ("race", "gender"):
        for r in rows:
            g = r["labels"].get(key)
            if g is not None:
                groups.setdefault(f"{key}:{g}", []).append(r["success"])
    rates = {g: sum(v) / len(v) for g, v in groups.items()}
    race = [v for g, v in rates.items() if g.startswith("race:")]
    to_eps = [r["to_eps"] for r in rows if r["to_eps"] is not None]
    stages = {}
    for r in rows:
        stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    return {"n": n, "success": ok, "rate": ok / n, "groups": {g: [sum(v), len(v)] for g, v in groups.items()},
            "race_gap": (max(race) - min(race)) if race else None, "wall_s_per_input": secs / n,
            "median_s_to_eps": statistics.median(to_eps) if to_eps else None,
            "success_per_cpu_s": ok / secs, "mean_passes": sum(r["passes"] for r in rows) / n,
            "median_l2": statistics.median(r["best_l2"] for r in rows), "stages": stages}


def _options(arm: str) -> PulseOptions:
    preset, _, rest = arm.partition(":")
    kw = {}
    for item in filter(None, rest.split("/")):
        k, _, v = item.partition("=")
        kw[k] = {"True": True, "False": False}.get(v, int(v) if v.lstrip("-").isdigit() else v)
    return PulseOptions(preset=preset, **kw)


def realism(real_folder, images: dict, boot: int = 200) -> dict:
    """FD-dlib of each search's results against the real crops, and for every other arm a paired
    bootstrap of its FD minus the paper's (the same resampled inputs and real crops for both)."""
    import numpy as np

    from pulse_sr.metrics.fd_dlib import embed, fd, load_crops

    real = embed(load_crops(real_folder, 64))
    emb = {k: embed(v) for k, v in images.items()}
    a = emb["paper"]
    out = {"fd": {k: fd(real, e) for k, e in emb.items()}, "bootstrap": boot, "n_real": len(real), "vs_paper": {}}
    for k, b in emb.items():
        if k == "paper":
            continue
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(boot):
            i = rng.integers(0, len(a), len(a))      # the same inputs for both searches: paired
            r = real[rng.integers(0, len(real), len(real))]
            diffs.append(fd(r, b[i]) - fd(r, a[i]))
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        out["vs_paper"][k] = {"diff": fd(real, b) - fd(real, a), "diff_ci95": [float(lo), float(hi)]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="UTKFace test folder")
    p.add_argument("--eval-subset", default="eval-200")
    p.add_argument("--sets", default="x4,pil24,pil13,pixelated,gray8")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--n-small", type=int, default=50)
    p.add_argument("--arms", default="paper,adaptive,adaptive:budget=200",
                   help="searches to compare, ','-separated: a preset, then ':' and key=value option overrides "
                        "joined by '/' (e.g. adaptive:budget=200/expand=False)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="adaptive_search.json")
    args = p.parse_args(argv)
    runtime.tune("cpu")
    model = load_model("default")
    searches = {arm: _options(arm) for arm in args.arms.split(",")}
    out = {"args": vars(args), "sets": {}}
    t0 = time.time()
    for kind in args.sets.split(","):
        items = make_set(kind, args)
        rows = {k: [] for k in searches}
        images = {k: [] for k in searches}
        for b, (spec, batch) in enumerate(batches(items, args.batch if kind != "pixelated" else 1)):
            arms = list(searches)
            order = arms[b % len(arms):] + arms[:b % len(arms)]  # each arm first in turn
            for k in order:
                r, imgs = run_one(model, batch, spec, searches[k])
                rows[k] += r
                images[k].append(imgs)
            done = " · ".join(f"{k} {sum(x['success'] for x in v)}" for k, v in rows.items())
            print(f"{kind} batch {b}: {len(rows[arms[0]])}/{len(items)} · {done} · {time.time() - t0:.0f} s", flush=True)
        res = {k: summarize(v) for k, v in rows.items()}
        if kind == "x4" and "paper" in images:
            try:
                res["realism"] = realism(args.folder, {k: torch.cat(v) for k, v in images.items()})
            except Exception as exc:  # no dlib: say so, keep the rest
                res["realism"] = {"error": str(exc)}
        out["sets"][kind] = {"summary": res, "rows": rows}
        print(json.dumps({kind: res}, indent=1), flush=True)
        Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
