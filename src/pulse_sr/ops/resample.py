"""Resampling, in one place: the cubic kernel, PULSE's exact bicubic downscale,
the rule for which LR sizes it supports, and the bicubic and nearest upscales.

* :func:`bicubic_downscale` is the downscaler DS of PULSE (Section 3, the
  downscaling loss). It reproduces the reference ``BicubicDownSample``: a
  separable cubic kernel (Keys, a = -0.5) of length ``4 * factor`` sampled at
  pixel centres and normalised to sum 1, reflect padding of
  ``4 * factor - factor`` pixels split top/bottom (left/right) as
  ``floor``/``ceil``, and stride ``factor``; the vertical pass runs before the
  horizontal one.
* :func:`downscale_factor` is the one rule for which (size, LR size) pairs that
  downscale supports; :func:`valid_lr_sizes` and :func:`check_lr_size` spell it
  for a model's resolution.
* :func:`imresize_matrix` and :func:`upscale_bicubic` are MATLAB's ``imresize``
  (bicubic, a = -0.5, antialiased when shrinking): the "bicubic" baseline of
  super-resolution papers and the half-scale step of NIQE.

Every cubic here is Keys' kernel with a = -0.5, as in the paper's code and MATLAB.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputSizeError

KEYS_A = -0.5  # Keys' cubic parameter used by the reference and by MATLAB.


def cubic(x, a: float = KEYS_A):
    """Keys' cubic convolution kernel, for a float or elementwise for a numpy array."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2, ax3 = ax * ax, ax * ax * ax
    out = (((a + 2.0) * ax3 - (a + 3.0) * ax2 + 1.0) * (ax <= 1)
           + (a * ax3 - 5.0 * a * ax2 + 8.0 * a * ax - 4.0 * a) * ((ax > 1) & (ax < 2)))
    return float(out) if out.ndim == 0 else out


def downscale_factor(size: int, lr_size: int) -> Optional[int]:
    """The integer factor by which :func:`bicubic_downscale` takes ``size`` to ``lr_size``, or None.

    It needs ``lr_size`` to divide ``size``, and reflect padding of ceil(3f / 2)
    pixels on one side, which must be smaller than ``size``.
    """
    if lr_size < 1 or size < 1 or size % lr_size:
        return None
    f = size // lr_size
    pad = 3 * f
    return f if pad - pad // 2 < size else None


def valid_lr_sizes(resolution: int) -> List[int]:
    """LR sizes h that a ``resolution``-px model's exact bicubic downscale reaches."""
    return [h for h in range(1, resolution + 1) if downscale_factor(resolution, h) is not None]


def check_lr_size(h: int, w: int, resolution: int) -> int:
    """Return the downscale factor for an (h, w) input, or raise InputSizeError."""
    factor = downscale_factor(resolution, h) if h == w else None
    if factor is None:
        valid = valid_lr_sizes(resolution)
        raise InputSizeError(f"{w}×{h} is not a supported LR size for a {resolution}-px model; "
                             f"use a square input of {', '.join(map(str, valid))} px, or resize")
    return factor


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
    if downscale_factor(h, h // factor) is None or downscale_factor(w, w // factor) is None:
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


def imresize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """(out_len, in_len) matrix of MATLAB ``imresize``'s bicubic weights along one axis.

    Antialiased when shrinking (scale < 1), as MATLAB's default; ``M @ signal`` resizes.
    """
    width = 4.0
    if scale < 1:  # antialiasing: stretch the kernel by 1/scale
        kernel = lambda t: scale * cubic(scale * t)  # noqa: E731
        width = width / scale
    else:
        kernel = cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # output pixel centre in input coordinates (1-based)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = kernel(u[:, None] - idx)
    w = w / w.sum(axis=1, keepdims=True)
    # Out-of-range taps read the image mirrored at its border (MATLAB's "symmetric").
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    src = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_len)]
    mat = np.zeros((out_len, in_len))
    np.add.at(mat, (np.repeat(np.arange(out_len), taps), src.ravel()), w.ravel())
    return mat


def upscale_bicubic(lr: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h*f, w*f) as MATLAB's ``imresize(lr, f)`` (bicubic, a = -0.5), clamped to [0, 1].

    The "bicubic" baseline of super-resolution papers, used by the demo and ``pulse eval``.
    """
    h, w = lr.shape[-2:]
    rows = torch.from_numpy(imresize_matrix(h, h * factor, float(factor)))
    cols = torch.from_numpy(imresize_matrix(w, w * factor, float(factor)))
    up = torch.einsum("Hh,bchw,Ww->bcHW", rows, lr.double(), cols)
    return up.clamp(0, 1).to(lr.dtype)


def upscale_nearest(lr: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, h*f, w*f) by pixel replication: the "nearest" baseline."""
    return F.interpolate(lr, scale_factor=factor, mode="nearest")


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
