"""Running ``pulse eval``: the paper's experiments on a folder of HR images.

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

Each finished image is written to ``per_image/<file name>.json`` at once, so an
interrupted run resumes where it stopped; a file written with other settings is
recomputed. At the end ``results.json``, ``report.md`` and figure grids under
``figures/`` are written from all per-image files.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ...errors import InputImageError, InputSizeError, PulseError, exit_code
from ...images import expand_inputs, load_rgb, pil_to_tensor, save_image
from ...metrics.fidelity import psnr, ssim
from ...metrics.niqe import niqe
from ...ops.degrade import parse_degradations
from ...ops.resample import bicubic_downscale, check_lr_size, upscale_bicubic, upscale_nearest
from ...runtime import tune
from ...search import PulseOptions, upsample
from ...search.losses import l2_per_sample
from .labels import load_labels
from .report import write_figures, write_report, write_results
from .settings import CLEAN, GRID_RUNS, EvalSettings, condition_seed, file_tag, signature
from .summary import summarize


def load_hr(path: Path, resolution: int, notes: Optional[List[str]] = None):
    """(3, R, R) HR tensor for the model, and the original size if it had to be resized."""
    from PIL import Image

    img = load_rgb(path, notes)
    if img.size == (resolution, resolution):
        return pil_to_tensor(img), None
    if img.size[0] != img.size[1]:
        raise InputSizeError(f"{path}: {img.size[0]}×{img.size[1]} is not square; eval needs HR images in "
                             f"the model's {resolution}×{resolution} frame (align and crop them first)")
    return pil_to_tensor(img.resize((resolution, resolution), Image.BICUBIC)), list(img.size)


def _niqe_or_none(x: torch.Tensor, enabled: bool, color: str) -> Optional[float]:
    return niqe(x, color=color) if enabled else None


def _evaluate_batch(model, opts, s, degradations, names, hrs, resized, sig, out_dir, grid_names, log):
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
            g = torch.Generator().manual_seed(condition_seed(s.seed, name, cname))
            if cond is None:
                inputs.append(lr_clean[i])
            elif cond.stage == "hr":
                inputs.append(bicubic_downscale(cond(hr[i:i + 1], generator=g), s.scale)[0].clamp(0, 1))
            else:
                inputs.append(cond(lr_clean[i:i + 1], generator=g)[0])
        lr_in = torch.stack(inputs)
        res = upsample(lr_in, model, opts, samples=s.runs, seed=s.seed)
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
                d = out_dir / "images" / name
                save_image(upscale_nearest(lr_in[i:i + 1], s.scale)[0], d / f"{file_tag(cname)}_input.png")
                for k in range(min(s.runs, GRID_RUNS)):
                    save_image(sr[k], d / f"{file_tag(cname)}_run{k}.png")
                if cond is None:
                    save_image(hr[i], d / "hr.png")
                    save_image(bicubic[i], d / "bicubic.png")
        if log:
            ok = int(res.success.sum())
            log(f"  {cname}: {ok}/{res.success.numel()} runs within eps, {res.seconds:.1f} s")

    for rec in records:
        path = record_path(out_dir, rec["file"])
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written record
    return records


def record_path(out_dir: Path, name: str) -> Path:
    """Where an image's record lives: keyed by its file name (the path relative to DATA_DIR),
    so ``a.png`` and ``a.jpg`` get one each."""
    return Path(out_dir) / "per_image" / f"{name}.json"


def evaluate(data_dir, model, out_dir, options: Optional[PulseOptions] = None,
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
    dev = tune(device)
    model = model.to(dev)
    r = model.resolution
    if r % s.scale:
        raise InputSizeError(f"scale {s.scale} does not divide the model's {r}-px resolution")
    check_lr_size(r // s.scale, r // s.scale, r)

    notes: List[str] = []
    files = expand_inputs([data_dir], notes)
    for line in notes if log else ():
        log(line)
    if not files:
        raise InputImageError(f"{data_dir}: no images (PNG/JPEG/WebP/BMP) found")
    files = sorted(files, key=lambda p: p.name)
    if s.n:
        files = files[:s.n]
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputImageError(f"--out {out_dir} is a file, not a folder; choose a folder for the results")
    try:
        (out_dir / "per_image").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputImageError(f"cannot create {out_dir} ({exc.strerror or exc})") from None
    sig = signature(model, opts, s, degradations)
    grid_names = {p.name for p in files[:s.grid_images]}

    records: Dict[str, dict] = {}
    errors: List[dict] = []
    todo: List[Path] = []
    for p in files:
        path = record_path(out_dir, p.name)
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
        for rec in _evaluate_batch(model, opts, s, degradations, names, [b[1] for b in batch],
                                   [b[2] for b in batch], sig, out_dir, grid_names, log):
            records[rec["file"]] = rec
        batch.clear()

    for p in todo:
        notes.clear()
        try:
            hr, resized = load_hr(p, r, notes)
        except PulseError as exc:
            errors.append({"file": p.name, "error": str(exc)})
            if log:
                log(f"error: {exc}")
            continue
        finally:
            for line in notes if log else ():
                log(line)
        batch.append((p.name, hr, resized))
        if len(batch) >= s.batch_images:
            flush()
    flush()

    ordered = [records[p.name] for p in files if p.name in records]
    labels = load_labels(s.labels, [rec["file"] for rec in ordered])
    results = summarize(ordered, labels, sig, s, errors)
    results["device"] = _device_name(dev)
    # Searches that miss eps are what eval measures, not failures of the run; skipped images are.
    results["exit_code"] = exit_code(bad_input=bool(errors), not_found=False)
    write_results(results, ordered, out_dir)
    write_figures(ordered, [CLEAN] + [d.name for d in degradations], out_dir, s.runs)
    write_report(results, out_dir)
    return results


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type
