"""FIR filtering with up- and down-sampling (``upfirdn``), shared by StyleGAN2 and StyleGAN3.

NVIDIA's ``upfirdn2d``: insert zeros to up-sample, pad, convolve with a FIR
filter, keep every ``down``-th pixel. Written so that no work is spent on the
inserted zeros (strided transposed convolutions) or on the dropped pixels
(strided convolutions), and every convolution keeps only its weight for the
backward pass (:mod:`.frozen_conv`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from . import frozen_conv

__all__ = ["setup_filter", "upfirdn", "upsample2d"]


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """NVIDIA's stored form of a FIR filter: the normalised outer product for < 8 taps, else the 1-D taps."""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    if f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def _fir_weight(f: torch.Tensor, channels: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """A 1-D filter (K,) as a depthwise conv weight (channels, 1, K, 1) for dim 2 or (channels, 1, 1, K) for dim 3."""
    shape = (1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1)
    return f.to(dtype).reshape(shape).expand(channels, -1, -1, -1)


def _upsample_fir_1d(x: torch.Tensor, f: Optional[torch.Tensor], up: int, pad: Tuple[int, int], dim: int,
                     gain: float = 1.0) -> torch.Tensor:
    """Along ``dim`` (2: H, 3: W) of (B, C, H, W): insert up-1 zeros after each sample, pad by ``pad`` zeros
    (negative crops), convolve with ``f`` (K,) times ``up * gain`` with no padding. Output length
    N * up + sum(pad) - K + 1.

    The factor ``up`` restores the mean that the inserted zeros removed.
    """
    if f is None:
        if up > 1:
            size = list(x.shape)
            size[dim] *= up
            z = x.new_zeros(size)
            index = [slice(None)] * 4
            index[dim] = slice(None, None, up)
            z[tuple(index)] = x
            x = z
        x = x * gain if gain != 1 else x
        return F.pad(x, (0, 0) + pad if dim == 2 else pad)
    # A transposed convolution with stride ``up`` is zero insertion followed by
    # a full convolution, without multiplying the zeros: y[n] = sum_m x[m] f[n - up m],
    # n = 0 .. (N - 1) * up + K - 1. Padding then convolving without padding
    # gives y from n = K - 1 - pad[0] on, so cropping (or padding) y gives it.
    channels, taps = x.shape[1], f.shape[0]
    stride = (up, 1) if dim == 2 else (1, up)
    weight = _fir_weight(f * (up * gain), channels, dim, x.dtype)
    pads = (pad[0] - (taps - 1), pad[1] - (taps - up))
    return _transposed_then_pad(x, weight, stride, pads if dim == 2 else (0, 0), pads if dim == 3 else (0, 0))


def _transposed_then_pad(x: torch.Tensor, weight: torch.Tensor, stride, pad_h: Tuple[int, int],
                         pad_w: Tuple[int, int]) -> torch.Tensor:
    """A depthwise transposed convolution, then pad (negative: crop) each side of H and W.

    The part of a crop that both sides share is the transposed convolution's own
    ``padding``, so only an uneven remainder goes through ``F.pad``, whose
    backward builds a full-size zero tensor.
    """
    ch = max(0, -max(pad_h))
    cw = max(0, -max(pad_w))
    y = frozen_conv.conv_transpose2d(x, weight, stride=stride, padding=(ch, cw), groups=x.shape[1])
    rest = (pad_w[0] + cw, pad_w[1] + cw, pad_h[0] + ch, pad_h[1] + ch)
    return F.pad(y, rest) if any(rest) else y


def _fir_downsample_1d(x: torch.Tensor, f: Optional[torch.Tensor], down: int, dim: int) -> torch.Tensor:
    """Along ``dim`` (2: H, 3: W) of (B, C, H, W): convolve with ``f`` (K,) with no padding and keep every
    ``down``-th sample. Output length (N - K) // down + 1."""
    if f is None:
        index = [slice(None)] * 4
        index[dim] = slice(None, None, down)
        return x[tuple(index)]
    channels = x.shape[1]
    stride = (down, 1) if dim == 2 else (1, down)
    # Striding the convolution computes only the samples that are kept.
    return frozen_conv.conv2d(x, _fir_weight(f.flip(0), channels, dim, x.dtype), stride=stride, groups=channels)


def upfirdn(x: torch.Tensor, f: Optional[torch.Tensor], up: int = 1, down: int = 1,
            padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Up-sample, FIR filter, down-sample: (B, C, H, W) -> (B, C, H', W').

    Inserts up-1 zeros after each pixel, pads by ``padding`` = (left, right,
    top, bottom) zeros (negative crops), convolves with ``f`` times
    ``up**2 * gain`` (no padding) and keeps every ``down``-th pixel. ``f`` is
    None (identity), (K,) (separable: one 1-D pass per axis) or (K, K) (a full
    2-D convolution). H' = (H * up + top + bottom - K + down) // down, and the
    same for W'.
    """
    left, right, top, bottom = (int(p) for p in padding)
    if f is not None and f.ndim == 1 and up == 1 and down > 1 and not any(padding):
        # Filter-and-decimate only: a strided convolution computes just the kept pixels.
        x = _fir_downsample_1d(x, f * gain if gain != 1 else f, down, dim=3)
        return _fir_downsample_1d(x, f, down, dim=2)
    if f is None or f.ndim == 1:
        x = _upsample_fir_1d(x, f, up, (left, right), dim=3, gain=gain)
        x = _upsample_fir_1d(x, f, up, (top, bottom), dim=2)
        return x[:, :, ::down, ::down] if down > 1 else x
    if f.ndim != 2 or f.shape[0] != f.shape[1]:
        raise ValueError(f"filter: expected shape (K,) or (K, K), got {tuple(f.shape)}")
    channels, taps = x.shape[1], f.shape[0]
    if up > 1:
        # As in the 1-D case: a strided transposed convolution never multiplies the
        # inserted zeros (up**2 times fewer products for a radial filter), then crop.
        w = (f * (up ** 2 * gain)).to(x.dtype)[None, None].expand(channels, -1, -1, -1)
        y = _transposed_then_pad(x, w, up, (top - (taps - 1), bottom - (taps - up)),
                                 (left - (taps - 1), right - (taps - up)))
        return y[:, :, ::down, ::down] if down > 1 else y
    conv_pad = (0, 0)
    if left == right >= 0 and top == bottom >= 0:
        conv_pad = (top, left)  # let the convolution pad: no padded copy
    else:
        x = F.pad(x, (left, right, top, bottom))
    # conv2d correlates; flipping the taps makes it a convolution.
    w = (f.flip(0, 1) * gain).to(x.dtype)[None, None].expand(channels, -1, -1, -1)
    return frozen_conv.conv2d(x, w, stride=down, padding=conv_pad, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x up-sampling with FIR ``f``, NVIDIA's ``upsample2d``: (B, C, H, W) -> (B, C, 2H, 2W)."""
    taps = f.shape[-1]
    p0, p1 = (taps + 1) // 2, (taps - 2) // 2
    return upfirdn(x, f, up=2, padding=(p0, p1, p0, p1))
