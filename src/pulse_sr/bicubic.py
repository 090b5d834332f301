"""Exact bicubic downscaler DS of PULSE (Section 3, the downscaling loss).

Reproduces the reference ``BicubicDownSample``: a separable cubic kernel
(Keys, a = -0.5) of length ``4 * factor`` sampled at pixel centres and
normalised to sum 1, reflect padding of ``4 * factor - factor`` pixels split
top/bottom (left/right) as ``floor``/``ceil``, and stride ``factor``; the
vertical pass runs before the horizontal one.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputSizeError


def cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel."""
    x = abs(x)
    if x <= 1.0:
        return (a + 2.0) * x ** 3 - (a + 3.0) * x ** 2 + 1.0
    if x < 2.0:
        return a * x ** 3 - 5.0 * a * x ** 2 + 8.0 * a * x - 4.0 * a
    return 0.0


@lru_cache(maxsize=None)
def bicubic_kernel(factor: int) -> Tuple[float, ...]:
    """The normalised 1-D kernel of length ``4 * factor``."""
    size = 4 * factor
    k = [cubic((i - math.floor(size / 2) + 0.5) / factor) for i in range(size)]
    s = sum(k)
    return tuple(v / s for v in k)


def bicubic_downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Downscale ``x`` of shape (B, C, H, W) by the integer ``factor``.

    Returns (B, C, H / factor, W / factor). H and W must be multiples of
    ``factor`` and larger than ``3 * factor`` (reflect padding needs it).
    Differentiable; any float dtype and device.
    """
    if not isinstance(factor, int) or factor < 1:
        raise InputSizeError(f"downscale factor must be a positive integer, got {factor!r}")
    if x.ndim != 4:
        raise InputSizeError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % factor or w % factor:
        raise InputSizeError(f"{h}x{w} is not divisible by the downscale factor {factor}; "
                             f"valid sizes are multiples of {factor}")
    size = 4 * factor
    pad = size - factor
    if min(h, w) <= pad // 2 + pad % 2:
        raise InputSizeError(f"{h}x{w} is too small to downscale by {factor} "
                             f"(reflect padding needs more than {pad - pad // 2} pixels)")
    k = torch.tensor(bicubic_kernel(factor), dtype=x.dtype, device=x.device)
    kv = k.view(1, 1, size, 1).expand(c, 1, size, 1)
    kh = k.view(1, 1, 1, size).expand(c, 1, 1, size)
    top, left = pad // 2, pad // 2
    x = F.pad(x, (0, 0, top, pad - top), mode="reflect")
    x = F.conv2d(x, kv, stride=(factor, 1), groups=c)
    x = F.pad(x, (left, pad - left, 0, 0), mode="reflect")
    return F.conv2d(x, kh, stride=(1, factor), groups=c)


class BicubicDownscale(nn.Module):
    """Module wrapper of :func:`bicubic_downscale`: (B, C, H, W) -> (B, C, H/f, W/f)."""

    def __init__(self,
                 factor: int,             # Integer downscale factor.
                 ):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_downscale(x, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
