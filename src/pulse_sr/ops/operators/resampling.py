"""Resampling terms: from the model's R×R frame to the input's own pixel grid (one per composition)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn.functional as F

from ...errors import InputSizeError, OperatorSpecError
from ..resample import bicubic_downscale, downscale_factor
from .base import Operator, SpecContext, Stage, fmt_number, numbers, register


@register
@dataclass(eq=False)
class Bicubic(Operator):
    """The paper's exact bicubic downscale by an integer factor (PULSE's ``BicubicDownSample``)."""

    factor: int
    name = "bicubic"
    stage = Stage.RESAMPLE
    usage = "bicubic:F"

    def __call__(self, hr):
        return bicubic_downscale(hr, self.factor)

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Bicubic":
        (f,) = numbers(args, "bicubic:F", 1, int)
        R, (h, w) = ctx.resolution, ctx.lr_size
        if f < 1 or R % f:
            raise OperatorSpecError(f"bicubic:{f}: the factor must divide the model's {R} px")
        if (R // f, R // f) != (h, w):
            raise OperatorSpecError(f"bicubic:{f} gives {R // f}×{R // f} px, but the input is {w}×{h}")
        return cls(f)

    def spec_args(self) -> str:
        return fmt_number(self.factor)

    def describe(self):
        return {"name": "bicubic", "factor": self.factor}


@register
@dataclass(eq=False)
class Resize(Operator):
    """Antialiased bicubic resampling (a = −0.5, PIL's filter support widened by the scale)."""

    size: Tuple[int, int]  # (h, w)
    name = "resize"
    stage = Stage.RESAMPLE
    usage = "resize:HxW"

    def __call__(self, hr):
        return F.interpolate(hr, size=tuple(self.size), mode="bicubic", antialias=True, align_corners=False)

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Resize":
        h, w = ctx.lr_size
        rh, rw = numbers(args, "resize:HxW", 2, int) if args else (h, w)
        if (rh, rw) != (h, w):
            raise OperatorSpecError(f"resize:{rh}x{rw} does not match the input's {h}x{w}")
        if rh > ctx.resolution or rw > ctx.resolution or min(rh, rw) < 1:
            raise OperatorSpecError(f"resize:{rh}x{rw}: sizes go from 1 to the model's {ctx.resolution} px")
        return cls((rh, rw))

    def spec_args(self) -> str:
        return f"{self.size[0]}x{self.size[1]}"

    def describe(self):
        return {"name": "resize", "size": list(self.size)}


def _block_matrix(n: int, block: int, offset: int, dtype=torch.float32) -> torch.Tensor:
    """(n, n) matrix averaging each run of pixels between boundaries at i ≡ offset (mod block)."""
    ids = torch.div(torch.arange(n) - offset % block + block, block, rounding_mode="floor")
    same = (ids[:, None] == ids[None, :]).to(dtype)
    return same / same.sum(1, keepdim=True)


@register
@dataclass(eq=False)
class Box(Operator):
    """Block means (an editor's pixelation) at the input's own size ``size`` = (h, w), on a grid whose
    boundaries fall at x ≡ ox, y ≡ oy (mod B), partial border blocks included. The HR frame is first
    area-resized to the input's size, unless they are equal."""

    block: int
    offset: Tuple[int, int]  # (ox, oy)
    size: Tuple[int, int]    # (h, w) of the input
    name = "box"
    stage = Stage.RESAMPLE
    usage = "box:B@ox,oy"

    def __post_init__(self):
        self.offset = (self.offset[0] % self.block, self.offset[1] % self.block)

    def __call__(self, hr):
        h, w = self.size
        x = hr if hr.shape[-2:] == (h, w) else F.interpolate(hr, size=(h, w), mode="area")
        my = _block_matrix(h, self.block, self.offset[1], x.dtype).to(x.device)
        mx = _block_matrix(w, self.block, self.offset[0], x.dtype).to(x.device)
        return my @ x @ mx.T

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Box":
        h, w = ctx.lr_size
        block_s, _, off = args.partition("@")
        (b,) = numbers(block_s, "box:B", 1, int)
        ox, oy = numbers(off, "box:B@ox,oy", 2, int) if off else (0, 0)
        if b < 1 or b > max(h, w):
            raise OperatorSpecError(f"box:{b}: the block must be from 1 to the input's size")
        return cls(b, (ox, oy), (h, w))

    def spec_args(self) -> str:
        return f"{self.block}@{self.offset[0]},{self.offset[1]}"

    def describe(self):
        return {"name": "box", "block": self.block, "offset": list(self.offset), "size": list(self.size)}


@register
@dataclass(eq=False)
class Nearest(Operator):
    """One HR pixel per F×F cell, at phase (px, py) inside the cell."""

    factor: int
    phase: Tuple[int, int] = (0, 0)  # (px, py)
    name = "nearest"
    stage = Stage.RESAMPLE
    usage = "nearest:F@phase"

    def __call__(self, hr):
        f, (px, py) = self.factor, self.phase
        n = hr.shape[-1] // f
        return hr[..., py::f, px::f][..., :n, :n]

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Nearest":
        (h, w), R = ctx.lr_size, ctx.resolution
        f_s, _, ph = args.partition("@")
        (f,) = numbers(f_s, "nearest:F", 1, int)
        phase = numbers(ph, "nearest:F@phase", None, int) if ph else [0]
        if len(phase) not in (1, 2):
            raise OperatorSpecError(f"nearest:{f}@{ph}: the phase is one number or two (px,py), not {len(phase)}")
        px, py = (phase * 2)[:2] if len(phase) == 1 else phase
        if f < 1 or R % f or (R // f, R // f) != (h, w):
            raise OperatorSpecError(f"nearest:{f} gives {R // max(f, 1)} px, but the input is {w}×{h}")
        if not (0 <= px < f and 0 <= py < f):
            raise OperatorSpecError(f"nearest:{f}@{ph}: the phase must be from 0 to {f - 1}")
        return cls(f, (px, py))

    def spec_args(self) -> str:
        return f"{self.factor}@{self.phase[0]},{self.phase[1]}"

    def describe(self):
        return {"name": "nearest", "factor": self.factor, "phase": list(self.phase)}


def default_resampling(h: int, w: int, resolution: int) -> Operator:
    """``bicubic:F`` when an (h, w) input is the exact downscale size, else ``resize:HxW``; larger inputs are refused."""
    factor = downscale_factor(resolution, h) if h == w else None
    if factor is not None:
        return Bicubic(factor)
    if h > resolution or w > resolution:
        raise InputSizeError(f"{w}×{h} is larger than the model's {resolution}×{resolution} output, so no "
                             f"downscale of it can match; for a photo use --align, or shrink it with --lr-size")
    return Resize((h, w))
