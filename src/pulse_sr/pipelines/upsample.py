"""``pulse upsample`` as library code: run the search over image files and write the outputs.

For every input: ``<stem>.png`` (or ``<stem>_<k>.png`` with several samples),
``<stem>_lr.png`` (``<stem>_<k>_lr.png``): the downscale of each result, and an
entry in ``report.json``. A bad input is recorded and skipped.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional

from ..errors import InputImageError, PulseError, exit_code
from ..images import load_rgb, pil_to_tensor, save_image
from ..ops.resample import check_lr_size
from ..runtime import tune
from ..search import PulseOptions, upsample

IMAGINARY_NOTE = ("Outputs are imaginary faces generated to match the input; they do not recover "
                  "the real person and must not be used for identification.")

# progress(stem, step, steps, info) after every search step; info as in pulse_sr.upsample.
FileProgress = Callable[[str, int, int, dict], None]


def prepare_lr(path: Path, model, lr_size: Optional[int], align: bool) -> List[tuple]:
    """Return [(stem, lr_tensor)] for one input file (several with ``align``, one per face)."""
    img = load_rgb(path)
    if align:
        from ..align import align_photo_for_model
        crops = align_photo_for_model(img, model, lr_size)
        if not crops:
            raise InputImageError(f"{path}: no face found")
        return [(f"{path.stem}_face{k}", pil_to_tensor(lr)) for k, (_, lr) in enumerate(crops)]
    if lr_size is not None and img.size != (lr_size, lr_size):
        from PIL import Image
        img = img.resize((lr_size, lr_size), Image.BICUBIC)
    x = pil_to_tensor(img)
    check_lr_size(x.shape[1], x.shape[2], model.resolution)
    return [(path.stem, x)]


def _save_intermediate(out_dir: Path, stem: str, samples: int, step: int, hr, lo) -> None:
    for k in range(hr.shape[0]):
        tag = f"_{k}" if samples > 1 else ""
        save_image(hr[k], out_dir / stem / "HR" / f"{stem}{tag}_{step:04d}.png")
        save_image(lo[k], out_dir / stem / "LR" / f"{stem}{tag}_{step:04d}.png")


def write_report(report: dict, path: Path) -> None:
    """``report.json`` with one line per result, so that it diffs and greps well."""
    with open(path, "w") as f:
        f.write("{\n")
        for key in ("model", "resolution", "options", "note", "exit_code"):
            f.write(f"  {json.dumps(key)}: {json.dumps(report[key])},\n")
        f.write('  "errors": [' + ",".join("\n    " + json.dumps(e) for e in report["errors"]) + "],\n")
        f.write('  "results": [' + ",".join("\n    " + json.dumps(r) for r in report["results"]) + "\n  ]\n}\n")


def upsample_files(files: List[Path], model, out_dir: Path, opts: PulseOptions, samples: int = 1,
                   seed: Optional[int] = None, lr_size: Optional[int] = None, align: bool = False,
                   device=None, save_intermediate: bool = False, progress: Optional[FileProgress] = None,
                   log: Callable[[str], None] = print) -> dict:
    """Search every file with ``model`` (a :class:`pulse_sr.PulseModel`); write images and
    ``report.json``; return the report as a dict."""
    dev = tune(device)
    model = model.to(dev)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": model.source, "resolution": model.resolution, "options": opts.to_dict(),
              "note": IMAGINARY_NOTE, "results": [], "errors": []}
    for path in files:
        try:
            items = prepare_lr(path, model, lr_size, align)
        except PulseError as exc:  # unreadable, wrong size, no face, no template...
            log(f"error: {exc}")
            report["errors"].append({"input": str(path), "error": str(exc)})
            continue
        for stem, lr in items:
            callback = partial(_save_intermediate, out_dir, stem, samples) if save_intermediate else None
            step_progress = partial(progress, stem) if progress is not None else None
            res = upsample(lr, model, opts, samples=samples, seed=seed, progress=step_progress, callback=callback)
            for w in res.warnings:
                log(f"warning: {w}")
            for k in range(samples):
                tag = f"_{k}" if samples > 1 else ""
                hr_path = save_image(res.images[k], out_dir / f"{stem}{tag}.png")
                lr_path = save_image(res.downscaled[k], out_dir / f"{stem}{tag}_lr.png")
                entry = {"input": str(path), "output": hr_path.name, "downscaled": lr_path.name,
                         "success": bool(res.success[k]), "best_l2": float(res.best_l2[k]),
                         "eps": res.eps, "best_step": int(res.best_step[k]), "steps": res.steps_taken,
                         "seconds": round(res.seconds / samples, 3), "seed": res.seeds[k]}
                report["results"].append(entry)
                if not entry["success"]:
                    log(f"{stem}{tag}: no image found within eps={res.eps} (best L2 {entry['best_l2']:.2e}); "
                        f"written anyway and marked success=false")
    report["exit_code"] = exit_code(bad_input=bool(report["errors"]),
                                    not_found=any(not r["success"] for r in report["results"]))
    write_report(report, out_dir / "report.json")
    return report
