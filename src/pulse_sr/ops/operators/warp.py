"""``warp:WxH@x0,y0:M``: the model's frame seen in a photo, whose own pixels around a face are the measurement."""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from ...errors import OperatorSpecError
from .base import Operator, SpecContext, Stage, fmt_number, numbers, register


@register
class Warp(Operator):
    """The model frame seen in a photo: the photo's own pixels around a face are the measurement.

    ``to_frame`` is the 2×3 similarity from photo coordinates to model-frame
    coordinates (pixel corners at integers, as PIL's transforms use), ``box`` the
    photo region (x0, y0, w, h) that the frame covers. Each photo pixel of the
    box becomes the average of the HR face over its footprint: the face is
    area-resized to about the photo's scale, then sampled bilinearly at the
    pixel's centre. Pixels whose footprint leaves the frame do not count (the mask).
    Made for faces smaller in the photo than the model's frame (a LR photo).

    Spec: ``warp:WxH@x0,y0:m00,m01,m02,m10,m11,m12``, the matrix printed exactly.
    """

    name = "warp"
    stage = Stage.RESAMPLE
    usage = "warp:WxH@x0,y0:M"

    def __init__(self, to_frame, box: Tuple[int, int, int, int], resolution: int):
        M = torch.as_tensor(to_frame, dtype=torch.float64)
        if M.shape != (2, 3) or not bool(torch.isfinite(M).all()):
            raise OperatorSpecError(f"warp: the frame transform must be 2×3 finite numbers, got {list(M.shape)}")
        self.to_frame, self.box, self.resolution = M, tuple(int(v) for v in box), int(resolution)
        x0, y0, w, h = self.box
        det = float(torch.linalg.det(M[:, :2]).abs())
        if not det > 0 or w < 1 or h < 1:
            raise OperatorSpecError("warp: the frame transform is singular or the photo box is empty")
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + y0 + 0.5,
                                torch.arange(w, dtype=torch.float64) + x0 + 0.5, indexing="ij")
        qx = M[0, 0] * xs + M[0, 1] * ys + M[0, 2]
        qy = M[1, 0] * xs + M[1, 1] * ys + M[1, 2]
        self.scale = math.sqrt(det)  # model pixels per photo pixel
        half, R = self.scale / 2, float(resolution)
        inside = (qx >= half) & (qx <= R - half) & (qy >= half) & (qy <= R - half)
        if not bool(inside.any()):
            raise OperatorSpecError("the face's frame covers no whole pixel of the photo")
        self.mask = inside.float()[None, None]
        self.size = max(1, min(self.resolution, round(self.resolution / self.scale)))
        self.grid = torch.stack([qx / R * 2 - 1, qy / R * 2 - 1], dim=-1).float()[None]  # (1, h, w, 2)

    def __call__(self, hr):
        x = hr if self.size >= hr.shape[-1] else F.interpolate(hr, size=(self.size, self.size), mode="area")
        grid = self.grid.to(hr.device, hr.dtype).expand(hr.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Warp":
        where, _, matrix = args.partition(":")
        size_s, _, origin = where.partition("@")
        w, h = numbers(size_s, "warp:WxH", 2, int)
        x0, y0 = numbers(origin, "warp:WxH@x0,y0", 2, int)
        if (h, w) != tuple(ctx.lr_size):
            raise OperatorSpecError(f"warp:{w}x{h} does not match the input's {ctx.lr_size[1]}x{ctx.lr_size[0]}")
        m = numbers(matrix, "warp:WxH@x0,y0:m00,m01,m02,m10,m11,m12", 6)
        return cls([m[:3], m[3:]], (x0, y0, w, h), ctx.resolution)

    def spec_args(self) -> str:
        x0, y0, w, h = self.box
        m = ",".join(fmt_number(float(v)) for v in self.to_frame.flatten())
        return f"{w}x{h}@{x0},{y0}:{m}"

    def describe(self):
        return {"name": "warp", "box": list(self.box), "photo_px_per_model_px": round(1 / self.scale, 4),
                "to_frame": [[round(float(v), 6) for v in row] for row in self.to_frame]}
