"""``mask:PATH``: only the pixels where the mask is white count (inpainting)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import OperatorSpecError, PulseError
from .base import Operator, SpecContext, Stage, content_hash, register


@register
@dataclass(eq=False)
class Mask(Operator):
    """Only the pixels where ``known`` (h, w) is true count. ``source`` is the file it came from
    (then it prints as ``mask:PATH``); a mask made from a tensor has no spec, only a key."""

    known: torch.Tensor
    source: str = ""
    name = "mask"
    stage = Stage.MASK
    usage = "mask:PATH"

    def __post_init__(self):
        self.known = self.known.bool()
        self.mask = self.known.float()[None, None]

    def __call__(self, x):
        return x

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Mask":
        h, w = ctx.lr_size
        try:
            pixels = ctx.mask_pixels(args)
        except PulseError as exc:
            raise OperatorSpecError(f"mask:{args}: {exc}") from None
        if tuple(pixels.shape[-2:]) != (h, w):
            raise OperatorSpecError(f"mask:{args} is {pixels.shape[-1]}×{pixels.shape[-2]}; it must be the "
                                    f"input's {w}×{h}")
        known = (pixels.mean(0) if pixels.ndim == 3 else pixels) > 0.5
        if not bool(known.any()):
            raise OperatorSpecError(f"mask:{args} marks no pixel as known (white)")
        return cls(known, args)

    def spec_args(self) -> str:
        if not self.source:
            raise OperatorSpecError("a mask made from a tensor has no spec; its key() is a content hash")
        return self.source

    def key(self) -> str:
        return f"mask:{content_hash(self.known)}"

    def describe(self):
        return {"name": "mask", "path": self.source, "known": float(self.known.float().mean())}
