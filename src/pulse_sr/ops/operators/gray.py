"""``gray``: the measurement is a grayscale photo, so colour faces whose gray downscale matches count."""

from __future__ import annotations

from ..color import LUMA_BT601, rgb_to_gray
from .base import Operator, SpecContext, Stage, register


@register
class Gray(Operator):
    """BT.601 luma (:func:`pulse_sr.ops.color.rgb_to_gray` with its rounded weights), on three channels."""

    name = "gray"
    stage = Stage.COLOR
    usage = "gray"

    def __call__(self, x):
        return rgb_to_gray(x, LUMA_BT601).expand(-1, 3, -1, -1)

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Gray":
        if args:
            from ...errors import OperatorSpecError
            raise OperatorSpecError(f"gray:{args}: gray takes no arguments")
        return cls()
