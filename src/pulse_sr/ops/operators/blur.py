"""``blur:gauss:σ`` and ``blur:motion:len,angle``: a blur of the HR face before the resampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import torch
import torch.nn.functional as F

from ...errors import OperatorSpecError
from ..blur_kernels import gauss_kernel, motion_kernel
from .base import Operator, SpecContext, Stage, echo, fmt_number, numbers, register

# Below this a Gaussian kernel is a single tap (and tinier values underflow to NaN).
MIN_SIGMA = 0.05


@register
@dataclass(eq=False)
class Blur(Operator):
    """A blur of the HR face: Gaussian of std σ, or a straight motion of ``len`` px at ``angle`` degrees
    (the kernels of :mod:`pulse_sr.ops.blur_kernels`, shared with ``--degrade motion``). Borders are
    reflected."""

    kind: str                     # "gauss" or "motion"
    params: Tuple[float, ...]
    name = "blur"
    stage = Stage.BLUR
    usage = "blur:gauss:σ|blur:motion:len,angle"
    kernel: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self.params = tuple(float(p) for p in self.params)
        if self.kind == "motion" and len(self.params) == 2:  # one angle per direction: the canonical spec
            self.params = (self.params[0], self.params[1] % 360.0)
        self.kernel = gauss_kernel(*self.params) if self.kind == "gauss" else motion_kernel(*self.params)

    def __call__(self, hr):
        k = self.kernel.to(hr.device, hr.dtype)
        p = k.shape[-1] // 2
        x = F.pad(hr, (p, p, p, p), mode="reflect" if p < hr.shape[-1] else "replicate")
        c = hr.shape[1]
        return F.conv2d(x, k[None, None].expand(c, 1, -1, -1), groups=c)

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Blur":
        kind, _, params = args.partition(":")
        R = ctx.resolution
        if kind == "gauss":
            (sigma,) = numbers(params, "blur:gauss:σ", 1)
            # Its kernel (6σ + 1 taps) at most the HR image: a wider one costs memory and time for nothing.
            if not MIN_SIGMA <= sigma <= R / 6:
                raise OperatorSpecError(f"blur:gauss:{fmt_number(sigma)}: σ must be from {MIN_SIGMA} to "
                                        f"{fmt_number(R / 6)} px (a sixth of the model's {R} px)")
            return cls("gauss", (sigma,))
        if kind == "motion":
            length, angle = numbers(params, "blur:motion:len,angle", 2)
            if not 1 <= length <= R:
                raise OperatorSpecError(f"blur:motion:{fmt_number(length)}: the length must be from 1 to the "
                                        f"model's {R} px")
            return cls("motion", (length, angle))
        raise OperatorSpecError(f"blur:{echo(kind)}: the blurs are gauss:σ and motion:len,angle")

    def spec_args(self) -> str:
        return f"{self.kind}:" + ",".join(fmt_number(p) for p in self.params)

    def describe(self):
        keys = ("sigma",) if self.kind == "gauss" else ("length", "angle")
        return {"name": "blur", "kind": self.kind, **dict(zip(keys, self.params))}
