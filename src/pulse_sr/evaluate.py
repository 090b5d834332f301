"""The library side of ``pulse eval``: the paper's experiments on a folder of HR images.

For each HR image (in the model's frame; resized to the model's resolution if it
is square but of another size) this makes the LR input with the exact bicubic
downscaler, runs PULSE ``runs`` times (seeds ``seed .. seed + runs - 1``, the
same for every image, so conditions are paired), optionally on degraded inputs,
and measures:

- success within eps, the downscaling L2, and search seconds per image;
- NIQE of HR, nearest, bicubic and PULSE (Table 2 of the paper);
- PSNR/SSIM against HR of nearest, bicubic and PULSE (Appendix C);
- for each degradation (Sec. 5), the L2 of DS(SR) to the *clean* LR and to the
  *degraded* input;
- success rates per group (Table 3 and the model card) from labels.

Each finished image is written to ``per_image/<stem>.json`` at once, so an
interrupted run resumes where it stopped; a file written with other settings is
recomputed. At the end ``results.json``, ``report.md`` and figure grids under
``figures/`` are written from all per-image files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .bicubic import bicubic_downscale
from .degrade import Degradation, parse_degradations
from .errors import InputImageError, InputSizeError, PulseError
from .eval_labels import load_labels, wilson_interval
from .images import expand_inputs, load_rgb, make_grid, pil_to_tensor, read_image, save_image
from .losses import l2_per_sample
from .metrics.fidelity import psnr, ssim
from .metrics.niqe import BLOCK_SIZE, imresize_matrix, niqe
from .search import PulseOptions, check_lr_size, upsample

EVAL_FORMAT = 1          # bump when per-image records change meaning
CLEAN = "clean"          # the condition without degradation
GRID_RUNS = 3            # PULSE columns in a figure grid


@dataclasses.dataclass
class EvalSettings:
    """What an evaluation runs; everything but ``batch_images`` and ``grid_images`` is in the results."""

    scale: int = 8                      # Downscale factor HR -> LR.
    runs: int = 5                       # PULSE searches (seeds) per image and condition.
    n: Optional[int] = 200              # Use the first n images (sorted by name); None = all.
    labels: Optional[str] = None        # "utkface", a CSV path, or None.
    degrade: str = ""                   # e.g. "gaussian:25,gaussian:50,motion:100,saltpepper:0.05".
    seed: int = 0                       # Seed of run 0; also seeds the degradations.
    batch_images: int = 4               # Images searched together in one batch.
    grid_images: int = 8                # Images shown in the figure grids.
    niqe: bool = True                   # Compute NIQE (needs a resolution of at least 96 px).
    niqe_color: str = "gray"            # NIQE's RGB->plane conversion: "gray" (MATLAB) or "y".

    def validate(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale}")
        if self.runs < 1:
            raise ValueError(f"runs must be at least 1, got {self.runs}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")
        if self.batch_images < 1:
            raise ValueError(f"batch_images must be at least 1, got {self.batch_images}")
        if self.niqe_color not in ("gray", "y"):
            raise ValueError(f"niqe_color must be 'gray' or 'y', got {self.niqe_color!r}")
        parse_degradations(self.degrade)


# ---------------------------------------------------------------------------
# Small pieces

def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    return v


def _signature(G, opts: PulseOptions, s: EvalSettings, degradations: Sequence[Degradation]) -> dict:
    """Everything a per-image record depends on; a record with another signature is redone."""
    return {"format": EVAL_FORMAT, "model": str(getattr(G, "source", "")), "resolution": int(G.resolution),
            "scale": s.scale, "runs": s.runs, "seed": s.seed,
            "degradations": [d.name for d in degradations],
            "niqe": s.niqe and G.resolution >= BLOCK_SIZE, "niqe_color": s.niqe_color,
            "options": {k: _jsonable(v) for k, v in vars(opts).items()}}


def _condition_seed(seed: int, name: str, condition: str) -> int:
    # Stable across runs and batchings (Python's hash() is salted per process).
    return zlib.crc32(f"{seed}|{name}|{condition}".encode()) & 0x7FFFFFFF


def _file_tag(condition: str) -> str:
    return condition.replace(":", "-")


def upscale_nearest(lr: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 3, h*f, w*f) by pixel replication: the 'nearest' baseline."""
    return F.interpolate(lr, scale_factor=factor, mode="nearest")


def upscale_bicubic(lr: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 3, h, w) -> (B, 3, h*f, w*f) as MATLAB's ``imresize(lr, f)`` (bicubic, a = -0.5), clamped.

    The 'bicubic' baseline of super-resolution papers.
    """
    h, w = lr.shape[-2:]
    rows = torch.from_numpy(imresize_matrix(h, h * factor, float(factor)))
    cols = torch.from_numpy(imresize_matrix(w, w * factor, float(factor)))
    up = torch.einsum("Hh,bchw,Ww->bcHW", rows, lr.double(), cols)
    return up.clamp(0, 1).to(lr.dtype)


def load_hr(path: Path, resolution: int):
    """(3, R, R) HR tensor for the model, and the original size if it had to be resized."""
    from PIL import Image

    img = load_rgb(path)
    if img.size == (resolution, resolution):
        return pil_to_tensor(img), None
    if img.size[0] != img.size[1]:
        raise InputSizeError(f"{path}: {img.size[0]}×{img.size[1]} is not square; eval needs HR images in "
                             f"the model's {resolution}×{resolution} frame (align and crop them first)")
    return pil_to_tensor(img.resize((resolution, resolution), Image.BICUBIC)), list(img.size)


def _niqe_or_none(x: torch.Tensor, enabled: bool, color: str) -> Optional[float]:
    return niqe(x, color=color) if enabled else None


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


# ---------------------------------------------------------------------------
# The run

def _evaluate_batch(G, opts, s, degradations, names, hrs, resized, sig, out_dir, device, grid_names, log):
    """Search and measure one batch of images under every condition; write their records."""
    hr = torch.stack(hrs)
    lr_clean = bicubic_downscale(hr, s.scale)
    use_niqe = sig["niqe"]
    records = []
    nearest, bicubic = upscale_nearest(lr_clean, s.scale), upscale_bicubic(lr_clean, s.scale)
    for i, name in enumerate(names):
        rec = {"file": name, "signature": sig, "resized_from": resized[i],
               "hr": {"niqe": _niqe_or_none(hr[i], use_niqe, s.niqe_color)}, "conditions": {}}
        for key, up in (("nearest", nearest), ("bicubic", bicubic)):
            rec[key] = {"niqe": _niqe_or_none(up[i], use_niqe, s.niqe_color),
                        "psnr": float(psnr(up[i], hr[i])), "ssim": float(ssim(up[i], hr[i]))}
        records.append(rec)

    for cond in [None] + list(degradations):
        cname = CLEAN if cond is None else cond.name
        inputs = []
        for i, name in enumerate(names):
            g = torch.Generator().manual_seed(_condition_seed(s.seed, name, cname))
            if cond is None:
                inputs.append(lr_clean[i])
            elif cond.stage == "hr":
                inputs.append(bicubic_downscale(cond(hr[i:i + 1], generator=g), s.scale)[0].clamp(0, 1))
            else:
                inputs.append(cond(lr_clean[i:i + 1], generator=g)[0])
        lr_in = torch.stack(inputs)
        res = upsample(lr_in, G, opts, samples=s.runs, seed=s.seed, device=device)
        per_image_seconds = res.seconds / len(names)
        for i, name in enumerate(names):
            sl = slice(i * s.runs, (i + 1) * s.runs)
            sr, ds = res.images[sl], res.downscaled[sl]
            l2_clean = l2_per_sample(ds.double(), lr_clean[i:i + 1].double().expand_as(ds))
            l2_input = l2_per_sample(ds.double(), lr_in[i:i + 1].double().expand_as(ds))
            runs = []
            for k in range(s.runs):
                run = {"seed": res.seeds[i * s.runs + k], "success": bool(res.success[i * s.runs + k]),
                       "best_l2": float(res.best_l2[i * s.runs + k]),
                       "l2_clean": float(l2_clean[k]), "l2_input": float(l2_input[k])}
                if cond is None:
                    run["psnr"] = float(psnr(sr[k], hr[i]))
                    run["ssim"] = float(ssim(sr[k], hr[i]))
                    run["niqe"] = _niqe_or_none(sr[k], use_niqe, s.niqe_color)
                runs.append(run)
            entry = {"runs": runs, "seconds": per_image_seconds, "steps": res.steps_taken}
            if cond is not None:
                entry["l2_input_to_clean"] = float(l2_per_sample(lr_in[i:i + 1].double(),
                                                                 lr_clean[i:i + 1].double())[0])
            records[i]["conditions"][cname] = entry
            if name in grid_names:
                d = out_dir / "images" / Path(name).stem
                save_image(upscale_nearest(lr_in[i:i + 1], s.scale)[0], d / f"{_file_tag(cname)}_input.png")
                for k in range(min(s.runs, GRID_RUNS)):
                    save_image(sr[k], d / f"{_file_tag(cname)}_run{k}.png")
                if cond is None:
                    save_image(hr[i], d / "hr.png")
                    save_image(bicubic[i], d / "bicubic.png")
        if log:
            ok = int(res.success.sum())
            log(f"  {cname}: {ok}/{res.success.numel()} runs within eps, {res.seconds:.1f} s")

    for rec in records:
        path = out_dir / "per_image" / f"{Path(rec['file']).stem}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written record
    return records


def evaluate(data_dir, G, out_dir, options: Optional[PulseOptions] = None,
             settings: Optional[EvalSettings] = None, *, device=None,
             log: Optional[Callable[[str], None]] = None) -> dict:
    """Run the evaluation and write ``results.json``, ``report.md`` and ``figures/``; return the results.

    Raises:
        InputSizeError: the scale does not fit the model's resolution.
        InputImageError: ``data_dir`` holds no images.
        ValueError: bad settings (e.g. an unknown degradation).
    """
    opts = options or PulseOptions()
    s = settings or EvalSettings()
    opts.validate()
    s.validate()
    degradations = parse_degradations(s.degrade)
    r = G.resolution
    if r % s.scale:
        raise InputSizeError(f"scale {s.scale} does not divide the model's {r}-px resolution")
    check_lr_size(r // s.scale, r // s.scale, r)

    files = expand_inputs([data_dir])
    if not files:
        raise InputImageError(f"{data_dir}: no images (PNG/JPEG/WebP/BMP) found")
    files = sorted(files, key=lambda p: p.name)
    if s.n is not None:
        files = files[:s.n]
    out_dir = Path(out_dir)
    (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
    sig = _signature(G, opts, s, degradations)
    grid_names = {p.name for p in files[:s.grid_images]}

    records: Dict[str, dict] = {}
    errors: List[dict] = []
    todo: List[Path] = []
    for p in files:
        path = out_dir / "per_image" / f"{p.stem}.json"
        if path.is_file():
            try:
                rec = json.loads(path.read_text())
                if rec.get("signature") == sig:
                    records[p.name] = rec
                    continue
            except (OSError, ValueError):
                pass  # unreadable or stale: redo it
        todo.append(p)
    if log:
        log(f"{len(files)} images: {len(records)} already done, {len(todo)} to run")

    batch: List[tuple] = []

    def flush():
        if not batch:
            return
        names = [b[0] for b in batch]
        if log:
            log(f"[{len(records) + len(batch)}/{len(files)}] {', '.join(names)}")
        for rec in _evaluate_batch(G, opts, s, degradations, names, [b[1] for b in batch],
                                   [b[2] for b in batch], sig, out_dir, device, grid_names, log):
            records[rec["file"]] = rec
        batch.clear()

    for p in todo:
        try:
            hr, resized = load_hr(p, r)
        except PulseError as exc:
            errors.append({"file": p.name, "error": str(exc)})
            if log:
                log(f"error: {exc}")
            continue
        batch.append((p.name, hr, resized))
        if len(batch) >= s.batch_images:
            flush()
    flush()

    ordered = [records[p.name] for p in files if p.name in records]
    labels = load_labels(s.labels, [rec["file"] for rec in ordered])
    results = summarize(ordered, labels, sig, s, errors)
    results["device"] = str(device) if device is not None else _device_name()
    write_results(results, ordered, out_dir)
    write_figures(ordered, [CLEAN] + [d.name for d in degradations], out_dir, s.runs)
    write_report(results, out_dir)
    return results


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


# ---------------------------------------------------------------------------
# Summaries

def _rate(successes: int, n: int) -> dict:
    lo, hi = wilson_interval(successes, n)
    return {"successes": successes, "n": n, "rate": successes / n if n else None, "ci95": [lo, hi]}


def summarize(records: List[dict], labels: Dict[str, Dict[str, str]], signature: dict,
              settings: EvalSettings, errors: List[dict]) -> dict:
    """The tables of the report, as data."""
    conditions = [CLEAN] + signature["degradations"]
    out = {"settings": {**signature, "n_requested": settings.n, "labels": settings.labels},
           "images": len(records), "errors": errors, "conditions": {}, "groups": {}}
    for cname in conditions:
        runs = [run for rec in records for run in rec["conditions"][cname]["runs"]]
        per_image_ok = [any(run["success"] for run in rec["conditions"][cname]["runs"]) for rec in records]
        c = {"runs": _rate(sum(run["success"] for run in runs), len(runs)),
             "images_any_success": _rate(sum(per_image_ok), len(per_image_ok)),
             "best_l2": {"mean": _mean(run["best_l2"] for run in runs),
                         "median": _median(run["best_l2"] for run in runs)},
             "seconds_per_image": _mean(rec["conditions"][cname]["seconds"] for rec in records)}
        if cname != CLEAN:
            c["l2_to_clean"] = {"mean": _mean(run["l2_clean"] for run in runs),
                                "median": _median(run["l2_clean"] for run in runs)}
            c["l2_to_input"] = {"mean": _mean(run["l2_input"] for run in runs),
                                "median": _median(run["l2_input"] for run in runs)}
            c["l2_input_to_clean"] = {"mean": _mean(rec["conditions"][cname]["l2_input_to_clean"]
                                                    for rec in records)}
        out["conditions"][cname] = c

    def per_image_mean(rec, key):
        return _mean(run[key] for run in rec["conditions"][CLEAN]["runs"])

    out["niqe"] = {"HR": _mean(rec["hr"]["niqe"] for rec in records),
                   "nearest": _mean(rec["nearest"]["niqe"] for rec in records),
                   "bicubic": _mean(rec["bicubic"]["niqe"] for rec in records),
                   "PULSE": _mean(per_image_mean(rec, "niqe") for rec in records),
                   "color": signature["niqe_color"], "computed": signature["niqe"]}
    out["fidelity"] = {
        method: {"psnr": _mean(f(rec, "psnr") for rec in records), "ssim": _mean(f(rec, "ssim") for rec in records)}
        for method, f in (("nearest", lambda rec, k: rec["nearest"][k]),
                          ("bicubic", lambda rec, k: rec["bicubic"][k]),
                          ("PULSE", per_image_mean))}

    # Per-group success on clean inputs (the paper's Table 3).
    for rec in records:
        for attr, group in labels.get(rec["file"], {}).items():
            g = out["groups"].setdefault(attr, {}).setdefault(group, {"images": 0, "runs_ok": 0, "runs": 0,
                                                                      "images_ok": 0})
            runs = rec["conditions"][CLEAN]["runs"]
            g["images"] += 1
            g["runs"] += len(runs)
            g["runs_ok"] += sum(run["success"] for run in runs)
            g["images_ok"] += any(run["success"] for run in runs)
    for attr, groups in out["groups"].items():
        for name, g in groups.items():
            g["run_rate"] = _rate(g["runs_ok"], g["runs"])
            g["image_rate"] = _rate(g["images_ok"], g["images"])
        out["groups"][attr] = dict(sorted(groups.items()))
    return out


def write_results(results: dict, records: List[dict], out_dir: Path) -> Path:
    path = Path(out_dir) / "results.json"
    data = dict(results)
    data["per_image"] = [{k: v for k, v in rec.items() if k != "signature"} for rec in records]
    path.write_text(json.dumps(data, indent=1))
    return path


def write_figures(records: List[dict], conditions: List[str], out_dir: Path, runs: int) -> List[Path]:
    """One grid per condition: input (nearest), PULSE runs, then bicubic and HR for clean."""
    written = []
    for cname in conditions:
        rows = []
        for rec in records:
            d = Path(out_dir) / "images" / Path(rec["file"]).stem
            tag = _file_tag(cname)
            names = [f"{tag}_input.png"] + [f"{tag}_run{k}.png" for k in range(min(runs, GRID_RUNS))]
            names += ["bicubic.png", "hr.png"] if cname == CLEAN else ["hr.png"]
            if all((d / n).is_file() for n in names):
                rows.append([read_image(d / n) for n in names])
        if rows:
            written.append(save_image(make_grid(rows), Path(out_dir) / "figures" / f"{tag}.png"))
    return written


def _fmt(v, spec=".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def _pct(rate: dict) -> str:
    if not rate["n"]:
        return "n/a"
    lo, hi = rate["ci95"]
    return f"{100 * rate['rate']:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def write_report(results: dict, out_dir: Path) -> Path:
    """``report.md``: the tables of the issue, from :func:`summarize`'s data."""
    st = results["settings"]
    opts = st["options"]
    lines = ["# PULSE evaluation", "",
             f"Model `{st['model']}` ({st['resolution']} px), ×{st['scale']} "
             f"({st['resolution'] // st['scale']} px inputs), {results['images']} images, "
             f"{st['runs']} runs per image (seeds {st['seed']}–{st['seed'] + st['runs'] - 1}), "
             f"{opts['steps']} steps, eps {opts['eps']}, loss `{opts['loss']}`, device {results.get('device', '?')}.",
             "",
             "Every PULSE output is an imaginary face that downscales to the input; it is not the real "
             "person and must not be used to identify anyone.", ""]
    if results["errors"]:
        lines += [f"{len(results['errors'])} image(s) skipped: "
                  + "; ".join(f"{e['file']}: {e['error']}" for e in results["errors"]), ""]

    lines += ["## Success and downscaling L2", "",
              "A run succeeds when its best image downscales to within eps (L2 = mean squared error in "
              "[0, 1] units). Run rates pool all runs; runs of one image are correlated, so their 95 % "
              "Wilson interval is optimistic. The image rate counts an image as found if any run was.", "",
              "| input | run success [95 % CI] | images with a success [95 % CI] | L2 mean | L2 median "
              "| seconds / image |",
              "|---|---|---|---|---|---|"]
    for cname, c in results["conditions"].items():
        lines.append(f"| {cname} | {_pct(c['runs'])} | {_pct(c['images_any_success'])} | "
                     f"{_fmt(c['best_l2']['mean'], '.2e')} | {_fmt(c['best_l2']['median'], '.2e')} | "
                     f"{_fmt(c['seconds_per_image'], '.2f')} |")
    lines += ["", "Seconds per image: search time of a batch divided by its images (all runs of an image "
              "run together).", ""]

    nq = results["niqe"]
    lines += ["## NIQE (lower is better)", ""]
    if nq["computed"]:
        lines += [f"MATLAB-equivalent NIQE with the LIVE pristine model, RGB to one plane by "
                  f"`{'rgb2gray' if nq['color'] == 'gray' else 'rgb2ycbcr (Y)'}`. PULSE: mean over runs, "
                  f"then images. The paper notes that NIQE means little at low resolution "
                  f"(fewer than four 96-px blocks below 192 px).", "",
                  "| HR | nearest | bicubic | PULSE |", "|---|---|---|---|",
                  f"| {_fmt(nq['HR'])} | {_fmt(nq['nearest'])} | {_fmt(nq['bicubic'])} | {_fmt(nq['PULSE'])} |", ""]
    else:
        lines += [f"Not computed: NIQE needs images of at least {BLOCK_SIZE}×{BLOCK_SIZE} px.", ""]

    fd = results["fidelity"]
    lines += ["## PSNR / SSIM against HR", "",
              "RGB in [0, 1]; SSIM with an 11×11 Gaussian window (sigma 1.5). PULSE: mean over runs, then images. "
              "PULSE does not aim at these (paper, Appendix C).", "",
              "| | nearest | bicubic | PULSE |", "|---|---|---|---|",
              "| PSNR (dB) | " + " | ".join(_fmt(fd[m]["psnr"], ".2f") for m in ("nearest", "bicubic", "PULSE")) + " |",
              "| SSIM | " + " | ".join(_fmt(fd[m]["ssim"], ".4f") for m in ("nearest", "bicubic", "PULSE")) + " |", ""]

    if results["groups"]:
        lines += ["## Success by group (clean inputs)", "",
                  f"Labels: `{st['labels']}`. 'unknown' collects images whose labels could not be read.", ""]
        for attr, groups in results["groups"].items():
            lines += [f"### {attr}", "", "| group | images | run success [95 % CI] | images with a success [95 % CI] |",
                      "|---|---|---|---|"]
            for name, g in groups.items():
                lines.append(f"| {name} | {g['images']} | {_pct(g['run_rate'])} | {_pct(g['image_rate'])} |")
            lines.append("")

    degr = [c for c in results["conditions"] if c != CLEAN]
    if degr:
        lines += ["## Degraded inputs", "",
                  "L2 of DS(SR) to the clean LR and to the degraded input it was given, and of the degraded "
                  "input to the clean LR for scale. The paper (Sec. 5) claims outputs land near the clean one.",
                  "", "| degradation | L2 DS(SR)→clean mean / median | L2 DS(SR)→degraded mean / median "
                  "| L2 degraded→clean | run success |", "|---|---|---|---|---|"]
        for cname in degr:
            c = results["conditions"][cname]
            lines.append(f"| {cname} | {_fmt(c['l2_to_clean']['mean'], '.2e')} / {_fmt(c['l2_to_clean']['median'], '.2e')} "
                         f"| {_fmt(c['l2_to_input']['mean'], '.2e')} / {_fmt(c['l2_to_input']['median'], '.2e')} "
                         f"| {_fmt(c['l2_input_to_clean']['mean'], '.2e')} | {_pct(c['runs'])} |")
        lines.append("")

    figs = [Path(out_dir) / "figures" / f"{_file_tag(c)}.png" for c in results["conditions"]]
    figs = [f for f in figs if f.is_file()]
    if figs:
        lines += ["## Figures", "",
                  "Rows are images. Columns: the input (nearest-upscaled), PULSE runs, then bicubic (clean only) "
                  "and HR.", ""]
        for f in figs:
            lines += [f"![{f.stem}](figures/{f.name})", ""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines))
    return path
