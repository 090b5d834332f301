"""The demo of the paper's Figure 3 idea: many HR faces, one LR input.

A face is sampled from the generator, downscaled (to 8x8 by default), and
PULSE runs with several seeds. The grid shows, top row: the LR input
(nearest-upscaled), its bicubic upscale, then the PULSE samples; bottom row:
the LR input again, the face it came from, then each sample's downscale
(nearest-upscaled), to compare with the input.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from ..images import make_grid, save_image
from ..ops.resample import bicubic_downscale, upscale_bicubic
from ..runtime import tune
from ..safe_paths import write_text
from ..search import PulseOptions, upsample
from .upsample.report import IMAGINARY_NOTE


def comparison_grid(lr: torch.Tensor, hr_reference: Optional[torch.Tensor], images: torch.Tensor,
                    downscaled: torch.Tensor) -> torch.Tensor:
    """lr (3, h, w); hr_reference (3, R, R) or None; images (K, 3, R, R); downscaled (K, 3, h, w)."""
    R = images.shape[-1]

    def nearest(x):
        return F.interpolate(x[None], size=(R, R), mode="nearest")[0]

    bicubic = upscale_bicubic(lr[None], R // lr.shape[-1])[0]  # a = -0.5, as in pulse eval
    blank = torch.ones(3, R, R)
    top = [nearest(lr), bicubic] + list(images)
    bottom = [nearest(lr), hr_reference if hr_reference is not None else blank] + [nearest(d) for d in downscaled]
    return make_grid([top, bottom])


@dataclasses.dataclass(frozen=True)
class DemoJob:
    """One demo: a sampled face (or a given photo's LR crop), downscaled, and ``samples`` PULSE seeds."""

    samples: int = 6
    seed: int = 0                           # the sampled face's seed; PULSE uses seed + 1000 + k
    lr_size: int = 8
    steps: int = 100
    tag: str = "sampled"                    # in the file names: demo_<tag>_grid.png
    photo_lr: Optional[torch.Tensor] = None  # (3, h, w): run on this instead of a sampled face
    photo_hr: Optional[torch.Tensor] = None  # its HR crop, shown in the grid


@dataclasses.dataclass
class DemoResult:
    """The files written, the search's result (with its tensors), and the report written as JSON."""

    paths: Dict[str, Path]
    result: object  # PulseResult
    report: dict


def run_demo(model, out_dir, job: DemoJob = DemoJob(), *, device=None,
             progress: Optional[Callable] = None) -> DemoResult:
    """Run the demo with ``model`` (a :class:`pulse_sr.PulseModel`); write the grid and report."""
    model = model.to(tune(device))
    G = model.generator
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag, samples = job.tag, job.samples
    if job.photo_lr is None:
        g = torch.Generator().manual_seed(job.seed)
        z = torch.randn(1, G.z_dim, generator=g).to(model.device)
        with torch.no_grad():
            hr = ((G.sample(z, truncation_psi=0.7, noise_mode="const") + 1) / 2).clamp(0, 1).cpu()
        lr = bicubic_downscale(hr, G.resolution // job.lr_size)[0].clamp(0, 1)
        hr = hr[0]
    else:
        lr, hr = job.photo_lr, job.photo_hr
    res = upsample(lr, model, PulseOptions(steps=job.steps), samples=samples, seed=job.seed + 1000,
                   progress=progress)
    grid = comparison_grid(lr, hr, res.images, res.downscaled)
    paths = {"grid": save_image(grid, out_dir / f"demo_{tag}_grid.png"),
             "lr": save_image(lr, out_dir / f"demo_{tag}_lr.png")}
    if hr is not None:
        paths["hr"] = save_image(hr, out_dir / f"demo_{tag}_hr.png")
    for k in range(samples):
        paths[f"sample{k}"] = save_image(res.images[k], out_dir / f"demo_{tag}_sample{k}.png")
    report = {"model": model.source, "input": tag, "lr_size": job.lr_size, "resolution": G.resolution,
              "steps": res.steps_taken, "seconds": round(res.seconds, 2), "eps": res.eps,
              "samples": [{"seed": s, "success": bool(ok), "best_l2": float(l2)}
                          for s, ok, l2 in zip(res.seeds, res.success, res.best_l2)],
              "note": IMAGINARY_NOTE}
    paths["report"] = out_dir / f"demo_{tag}_report.json"
    write_text(paths["report"], json.dumps(report, indent=2, allow_nan=False))
    return DemoResult(paths, res, report)
