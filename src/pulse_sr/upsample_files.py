"""Running the search over image files and writing the outputs (used by the CLI).

For every input: ``<stem>.png`` (or ``<stem>_<k>.png`` with several samples),
``<stem>_lr.png`` (``<stem>_<k>_lr.png``): the downscale of each result, and an
entry in ``report.json``. A bad input is recorded and skipped.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional


from .errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, InputImageError, PulseError
from .images import load_rgb, pil_to_tensor, save_image
from .search import PulseOptions, check_lr_size, upsample



def _tqdm_progress(desc: str, enabled: bool):
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, unit="step", leave=False, dynamic_ncols=True)

    def progress(step, steps, info):
        if bar.total is None:
            bar.total = steps
        bar.update(1)
        bar.set_postfix(l2=f"{info['l2']:.2e}", done=f"{info['done']}/{info['batch']}", refresh=False)

    return progress, bar


def prepare_lr(path: Path, resolution: int, lr_size: Optional[int], align: bool, G) -> List[tuple]:
    """Return [(stem, lr_tensor)] for one input file (several with --align)."""
    img = load_rgb(path)
    if align:
        from .align import align_photo_for_model
        crops = align_photo_for_model(img, G, lr_size)
        if not crops:
            raise InputImageError(f"{path}: no face found")
        return [(f"{path.stem}_face{k}", pil_to_tensor(lr)) for k, (_, lr) in enumerate(crops)]
    if lr_size is not None and img.size != (lr_size, lr_size):
        from PIL import Image
        img = img.resize((lr_size, lr_size), Image.BICUBIC)
    x = pil_to_tensor(img)
    check_lr_size(x.shape[1], x.shape[2], resolution)
    return [(path.stem, x)]


def _save_intermediate(out_dir: Path, stem: str, samples: int, step: int, hr, lo) -> None:
    for k in range(hr.shape[0]):
        tag = f"_{k}" if samples > 1 else ""
        save_image(hr[k], out_dir / stem / "HR" / f"{stem}{tag}_{step:04d}.png")
        save_image(lo[k], out_dir / stem / "LR" / f"{stem}{tag}_{step:04d}.png")


def upsample_files(files: List[Path], G, out_dir: Path, opts: PulseOptions, samples: int = 1,
                   seed: Optional[int] = None, lr_size: Optional[int] = None, align: bool = False,
                   device=None, save_intermediate: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict:
    """Search every file; write images and ``report.json``; return the report as a dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"model": getattr(G, "source", ""), "resolution": G.resolution,
              "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opts).items()},
              "note": "Outputs are imaginary faces generated to match the input; they do not recover "
                      "the real person and must not be used for identification.",
              "results": [], "errors": []}
    for path in files:
        try:
            items = prepare_lr(path, G.resolution, lr_size, align, G)
        except PulseError as exc:  # unreadable, wrong size, no face, no template...
            log(f"error: {exc}")
            report["errors"].append({"input": str(path), "error": str(exc)})
            continue
        for stem, lr in items:
            callback = (partial(_save_intermediate, out_dir, stem, samples) if save_intermediate else None)
            prog, bar = _tqdm_progress(stem, progress)
            try:
                res = upsample(lr, G, opts, samples=samples, seed=seed, device=device, progress=prog,
                               callback=callback)
            finally:
                if bar is not None:
                    bar.close()
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
    if report["errors"]:
        report["exit_code"] = EXIT_BAD_INPUT
    elif any(not r["success"] for r in report["results"]):
        report["exit_code"] = EXIT_NOT_FOUND
    else:
        report["exit_code"] = EXIT_OK
    with open(out_dir / "report.json", "w") as f:
        f.write("{\n")
        for key in ("model", "resolution", "options", "note", "exit_code"):
            f.write(f"  {json.dumps(key)}: {json.dumps(report[key])},\n")
        f.write('  "errors": [' + ",".join("\n    " + json.dumps(e) for e in report["errors"]) + "],\n")
        f.write('  "results": [' + ",".join("\n    " + json.dumps(r) for r in report["results"]) + "\n  ]\n}\n")
    return report
