"""Blur kernels, in one place: the Gaussian and the straight camera motion.

The ``blur`` forward operator (:mod:`pulse_sr.ops.operators.blur`) and the
motion-blur degradation of the paper's Sec. 5 (:mod:`pulse_sr.ops.degrade`)
both build their kernels here, so a ``blur:motion:9,30`` operator models
exactly the blur that ``--degrade motion:9`` applies at that angle.
"""

from __future__ import annotations

import math

import torch


def gauss_kernel(sigma: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(K, K) normalised Gaussian of std ``sigma`` pixels, K = 2 ceil(3σ) + 1 (at least 3)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k2 = k[:, None] * k[None, :]
    return (k2 / k2.sum()).to(dtype)


def motion_kernel(length: float, angle: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(K, K) kernel of a straight camera motion: a line of ``length`` pixels through the centre.

    The line's end points are ``length - 1`` apart, so that an axis-aligned line
    covers ``length`` pixel centres. It is sampled densely and each sample is spread
    bilinearly over its four nearest pixels, so any angle gives a smooth,
    point-symmetric kernel; it sums to 1.
    ``angle`` is in degrees, counter-clockwise from the +x (column) axis with y up,
    so 0 blurs along rows and 90 along columns. ``K`` is the smallest odd size that
    holds the line.
    """
    if not length >= 1:
        raise ValueError(f"motion blur length must be >= 1 pixel, got {length}")
    half = (length - 1) / 2.0
    theta = math.radians(angle)
    dx, dy = math.cos(theta), -math.sin(theta)  # y grows downwards in the image
    r = int(math.ceil(max(abs(half * dx), abs(half * dy)) - 1e-9))
    size = 2 * r + 1
    n = max(2, int(math.ceil(length)) * 8 + 1)
    t = torch.linspace(-half, half, n, dtype=torch.float64)
    px, py = r + t * dx, r + t * dy
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    k = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    for ox, oy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                        (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        k.index_put_(((y0 + oy).long(), (x0 + ox).long()), wgt, accumulate=True)
    k = k[:size, :size]
    return (k / k.sum()).to(dtype)
