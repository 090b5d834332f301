"""What an evaluation runs (:class:`EvalSettings`) and the signature that keys its resumable records."""

from __future__ import annotations

import dataclasses
import zlib
from typing import Optional, Sequence

from ...errors import SettingsError
from ...metrics.niqe import BLOCK_SIZE
from ...ops.degrade import Degradation, parse_degradations
from ...search import PulseOptions
from ...search.options import check_seed, option

EVAL_FORMAT = 3          # bump when per-image records change meaning (2: keyed by file name;
                         # 3: each (image, condition, run) searched as its own unit)
CLEAN = "clean"          # the condition without degradation
GRID_RUNS = 3            # PULSE columns in a figure grid


@dataclasses.dataclass
class EvalSettings:
    """What an evaluation runs; everything but ``grid_images`` is in the results."""

    scale: int = option(8, "Downscale factor HR -> LR.", min=1)
    runs: int = option(5, "PULSE runs (seeds) per image.", min=1)
    n: Optional[int] = option(200, "Use the first N images by name; 0 = all. (Under torchrun write --images: "
                                 "torchrun reads --n as an abbreviation of its own options.)", min=0, cli="--n",
                                 aliases=("--images",))
    labels: Optional[str] = option(None, "'utkface' (age_gender_race_* names) or a CSV of file,group[,...].")
    degrade: str = option("", "Also run on degraded inputs, e.g. gaussian:25,gaussian:50,motion:100,saltpepper:0.05 "
                            "(the paper's Sec. 5).")
    noise_aware: bool = option(False, "For gaussian:σ degradations, search with eps + (σ/255)², the expected extra "
                                      "mean square residual of that noise (as pulse upsample --noise-sigma).")
    seed: int = option(0, "Seed of run 0 (run k uses seed+k); also seeds the degradations.")
    batch: int = option(1, "Units (image, condition, run) searched together in one batch. More is faster on a "
                           "CPU or a GPU that one small search leaves idle, but changes the numbers (float "
                           "rounding, early stop), so it is part of what a resumed run must match. Results "
                           "never depend on the number of torchrun processes.", min=1)
    grid_images: int = option(8, "Images shown in the figure grids.", min=0, cli="--grid")
    niqe: bool = option(True, "Compute NIQE (needs a resolution of at least 96 px; the slowest metric at 1024 px).")
    niqe_color: str = option("gray", "NIQE's RGB to one plane: MATLAB's rgb2gray (as MATLAB's niqe) or YCbCr's Y.",
                           choices=("gray", "y"))

    def validate(self) -> None:
        if self.scale < 1:
            raise SettingsError(f"scale must be a positive integer, got {self.scale}")
        if self.runs < 1:
            raise SettingsError(f"runs must be at least 1, got {self.runs}")
        if self.n is not None and self.n < 0:
            raise SettingsError(f"n must be at least 0 (0 = all), got {self.n}")
        check_seed(self.seed + self.runs - 1, "--seed")
        if self.batch < 1:
            raise SettingsError(f"batch must be at least 1, got {self.batch}")
        if self.niqe_color not in ("gray", "y"):
            raise SettingsError(f"niqe_color must be 'gray' or 'y', got {self.niqe_color!r}")
        parse_degradations(self.degrade)


def signature(model, opts: PulseOptions, s: EvalSettings, degradations: Sequence[Degradation]) -> dict:
    """Everything a per-image record depends on; a record with another signature is redone."""
    return {"format": EVAL_FORMAT, "model": model.source, "resolution": model.resolution,
            "scale": s.scale, "runs": s.runs, "seed": s.seed, "batch": s.batch, "noise_aware": s.noise_aware,
            "degradations": [d.name for d in degradations],
            "niqe": s.niqe and model.resolution >= BLOCK_SIZE, "niqe_color": s.niqe_color,
            "options": opts.to_dict()}


def condition_eps(eps: float, degradation: Optional[Degradation], noise_aware: bool) -> float:
    """The eps a condition's searches use: with ``noise_aware``, gaussian:σ adds (σ/255)²."""
    if noise_aware and degradation is not None and degradation.name.startswith("gaussian:"):
        return eps + (degradation.params[0] / 255) ** 2
    return eps


def condition_seed(seed: int, name: str, condition: str) -> int:
    # Stable across runs and batchings (Python's hash() is salted per process).
    return zlib.crc32(f"{seed}|{name}|{condition}".encode()) & 0x7FFFFFFF


def file_tag(condition: str) -> str:
    return condition.replace(":", "-")
