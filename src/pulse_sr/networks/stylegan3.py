"""StyleGAN3 generator ("Alias-Free Generative Adversarial Networks", Karras et al., NeurIPS 2021).

Our own implementation of the alias-free generator, both configurations:

* **T** (translation equivariant): 3x3 modulated convolutions, separable
  Kaiser-windowed sinc low-pass filters;
* **R** (rotation equivariant): 1x1 convolutions and radially symmetric
  (jinc) down-sampling filters in the layers that are not critically sampled.

The generator maps ``z`` to ``w`` with a short mapping network, turns ``w[0]``
into Fourier features (a rotated and translated grid of sinusoids, Sec. 3.2),
and runs ``num_layers`` synthesis layers and a ToRGB layer, each reading its own
``w``. A synthesis layer is a modulated convolution with demodulation followed
by a *filtered leaky ReLU*: up-sample with a low-pass FIR filter, add the bias,
leaky ReLU, clamp, then low-pass and down-sample back (Sec. 3.2, Appendix C).

Parameter and buffer names follow NVIDIA's ``training/networks_stylegan3.py``
layout (``synthesis.input.freqs``, ``synthesis.L3_36_512.affine.weight``, ...)
so that a state dict read from their pickles loads by name; only NVIDIA's
``mapping.`` prefix is ``mapping_network.`` here, since :meth:`mapping` is a
method. The filters, Fourier frequencies and the input transform are buffers:
a loaded model uses the stored ones, a freshly built one designs its own.

Every layer runs in float32 (the pickles' float16 layers are a GPU training
speed-up) with plain autograd; there is a single implementation, so
:meth:`StyleGAN3Generator.set_impl` only validates its argument. The module
knows nothing about file formats.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import scipy.signal
import scipy.special
import torch
import torch.nn.functional as F
from torch import nn

from . import frozen_conv
from .fir import upfirdn
from .base import Features, Generator, GeneratorConfig
from .layers import (LRELU_GAIN, LRELU_SLOPE, FullyConnected, MappingNetwork, assert_shape, clamp_abs,
                     scale_channels)

__all__ = ["StyleGAN3Generator", "design_lowpass_filter", "filtered_lrelu", "modulated_conv2d"]


# ---------------------------------------------------------------------------
# Filters


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> Optional[torch.Tensor]:
    """A Kaiser-windowed low-pass FIR filter, float32; None for a single tap (identity).

    ``cutoff`` and ``width`` (the full transition band) are in the units of the
    sampling rate ``fs``. Separable (``radial=False``): a 1-D windowed sinc of
    ``numtaps`` taps, (numtaps,), applied along each axis. Radial: a 2-D windowed
    jinc, (numtaps, numtaps), whose pass band is a disc, as the R config needs
    for rotation equivariance (Sec. 3.3); its window is the outer product of the
    1-D Kaiser window designed for the same band. Both have unit DC gain.
    """
    if numtaps < 1:
        raise ValueError(f"a filter needs at least one tap, got numtaps={numtaps}")
    if numtaps == 1:
        return None
    if not radial:
        return torch.as_tensor(scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs), dtype=torch.float32)
    # Tap positions in units of 1/fs, centred; r is the distance from the centre.
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(t[:, None], t[None, :])
    # Impulse response of the ideal disc low-pass, J1(2 pi fc r) / (pi r), up to a
    # constant; its limit at r = 0 is fc (odd tap counts sample the centre).
    safe_r = np.where(r > 0, r, 1.0)
    jinc = np.where(r > 0, scipy.special.j1(2 * np.pi * cutoff * safe_r) / (np.pi * safe_r), cutoff)
    atten = scipy.signal.kaiser_atten(numtaps, width / (fs / 2))
    window = np.kaiser(numtaps, scipy.signal.kaiser_beta(atten))
    f = jinc * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


# ---------------------------------------------------------------------------
# Ops


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     padding: int = 0, input_gain: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Style-modulated convolution (StyleGAN2, Sec. 2.2), optionally demodulated.

    x (B, I, H, W), weight (O, I, k, k), styles (B, I), input_gain a scalar
    tensor or None -> (B, O, H + 2 * padding - k + 1, W + 2 * padding - k + 1).

    Scaling the weight's input channels by a per-sample style is the same as
    scaling the input's channels, and demodulation is a per-sample, per-output
    scale, so this runs one ordinary batched convolution instead of a grouped
    one with a weight per sample; it is faster on CPU and gives the same result.
    """
    batch, in_channels = x.shape[:2]
    assert_shape(weight, [None, in_channels, None, None], "weight")
    assert_shape(styles, [batch, in_channels], "styles")
    dcoefs = None
    if demodulate:
        # Bring weight and styles to unit RMS first, which keeps fp16 training
        # in range; demodulation cancels the scales up to the 1e-8 epsilon. The
        # style RMS is taken per sample, so a sample's result does not depend on
        # the rest of its batch.
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
        # 1 / ||weight * style|| per sample and output channel (B, O).
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
    # The input gain is applied after demodulation, so that it is not normalised away.
    scale = styles if input_gain is None else styles * input_gain
    if weight.shape[2:] == (1, 1) and padding == 0:
        # A 1x1 conv (every layer of config R, every ToRGB) is a (B, O, I) @ (B, I, H*W) product:
        # styles and demodulation go into that small per-sample weight, not onto the activations.
        b, i, h, w = x.shape
        wb = weight.reshape(1, -1, i) * scale.reshape(b, 1, i)
        if dcoefs is not None:
            wb = wb * dcoefs.reshape(b, -1, 1)
        return torch.bmm(wb, x.reshape(b, i, h * w)).reshape(b, -1, h, w)
    x = frozen_conv.conv2d(scale_channels(x, scale), weight, padding=padding)
    if dcoefs is not None:
        x = scale_channels(x, dcoefs)
    return x


def filtered_lrelu(x: torch.Tensor,
                   up_filter: Optional[torch.Tensor],
                   down_filter: Optional[torch.Tensor],
                   bias: Optional[torch.Tensor] = None,
                   up: int = 1,
                   down: int = 1,
                   padding: Sequence[int] = (0, 0, 0, 0),
                   gain: float = LRELU_GAIN,
                   slope: float = LRELU_SLOPE,
                   clamp: Optional[float] = None) -> torch.Tensor:
    """The alias-free nonlinearity (Sec. 3.2): (B, C, H, W) -> (B, C, H', W').

    1. add ``bias`` (C,);
    2. up-sample by ``up``: insert zeros, pad by ``padding`` = (left, right,
       top, bottom) pixels of the up-sampled image (negative crops), convolve
       with ``up_filter``, which removes the spectral copies the zeros made;
    3. leaky ReLU with ``slope``, times ``gain``, clamped to ±``clamp``; at the
       higher rate the new high frequencies it makes are representable ...
    4. ... so that convolving with ``down_filter`` and keeping every
       ``down``-th pixel removes them instead of aliasing them.

    Filters are None (identity), (K,) (separable) or (K, K) (e.g. radial). The
    output is H' = (H * up + top + bottom - Ku - Kd + 2 + down - 1) // down
    (Ku, Kd: filter lengths, 1 for None), and the same for W'. Plain torch
    ops, differentiable by autograd.
    """
    if x.ndim != 4:
        raise ValueError(f"x: expected (B, C, H, W), got {tuple(x.shape)}")
    if bias is not None:
        assert_shape(bias, [x.shape[1]], "bias")
        x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    if gain <= 0:
        raise ValueError(f"gain must be positive, got {gain}")
    # lrelu(gain * x) = gain * lrelu(x) for gain > 0, so the gain rides on the
    # up-sampling filter and saves a pass over the largest tensor.
    x = upfirdn(x, up_filter, up=up, padding=padding, gain=gain)
    if slope != 1:
        x = F.leaky_relu(x, slope)
    x = clamp_abs(x, clamp)
    return upfirdn(x, down_filter, down=down)


# ---------------------------------------------------------------------------
# Architecture


@dataclasses.dataclass(frozen=True)
class _Band:
    """Sampling rate, cutoff and transition half-width of one layer's signal (Sec. 3.2, Fig. 4)."""

    size: int             # Spatial size in pixels, margin included.
    channels: int         # Feature maps.
    sampling_rate: float  # s: samples per unit length (the image is one unit wide).
    cutoff: float         # f_c.
    half_width: float     # f_h: half the transition band, f_t - f_c.


def _layer_bands(img_resolution: int, img_channels: int, channel_base: float, channel_max: int, num_layers: int,
                 num_critical: int, first_cutoff: float, first_stopband: float, last_stopband_rel: float,
                 margin_size: int) -> List[_Band]:
    """Bands of the Fourier input (index 0, also layer 0's input) and of layers 1..num_layers (the last: ToRGB).

    Cutoff and minimum stopband grow geometrically from the first layer to
    the last non-critical one and then stay at the image's Nyquist rate
    (Sec. 4, "filter design"). Each sampling rate is the smallest power of
    two that holds the stopband, at most the image resolution; the last
    ``num_critical`` layers are critically sampled. Channels are inversely
    proportional to the cutoff. Computed in float64, as the released
    weights were designed.
    """
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    progress = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** progress
    stopbands = first_stopband * (last_stopband / first_stopband) ** progress
    rates = np.exp2(np.ceil(np.log2(np.minimum(2 * stopbands, img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + 2 * margin_size
    sizes[-2:] = img_resolution  # The last two layers work on the image itself, without a margin.
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return [_Band(int(sizes[i]), int(channels[i]), float(rates[i]), float(cutoffs[i]), float(half_widths[i]))
            for i in range(num_layers + 1)]


# ---------------------------------------------------------------------------
# Layers


class SynthesisInput(nn.Module):
    """Fourier features: w (B, w_dim) -> (B, channels, size, size).

    ``channels`` sinusoids with fixed random frequencies inside a disc of
    radius ``bandwidth`` and random phases, sampled on a ``size``-pixel grid at
    ``sampling_rate``, then mixed by a learned channels x channels matrix.
    ``w`` sets a rotation and translation of the grid (Sec. 3.2), applied after
    the stored user ``transform`` (a 3x3 affine map of image coordinates).
    """

    def __init__(self,
                 w_dim: int,              # W dimensionality.
                 channels: int,           # Number of sinusoids = output channels.
                 size: int,               # Output size in pixels (square).
                 sampling_rate: float,    # Grid sampling rate.
                 bandwidth: float,        # Largest frequency.
                 ):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = size
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth
        # Directions uniform on the circle; radii shrunk by exp(-r^2 / 4) of a
        # Gaussian draw, which keeps them below the bandwidth.
        freqs = torch.randn(channels, 2)
        radii = freqs.norm(dim=1, keepdim=True)
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand(channels) - 0.5
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)
        # (cos, sin, tx, ty) of the rotation and translation; it starts as the identity.
        self.affine = FullyConnected(w_dim, 4)
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """(B, w_dim) -> (B, channels, size, size)."""
        assert_shape(w, [None, self.w_dim], "w")
        batch = w.shape[0]
        # Rotation (c, s) normalised to unit length; the translation shares its scale.
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        c, s, tx, ty = t.unbind(dim=1)
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        rotate = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(batch, 3, 3)
        shift = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(batch, 3, 3)
        # Both maps are inverse ones (image -> grid coordinates): the image is
        # rotated, then translated, then the user transform applies.
        m = rotate @ shift @ self.transform.to(w.dtype)
        # Sampling sin(2 pi (f . (A p + b) + phase)) at p is sampling a sinusoid of
        # frequency f A with phase phase + f . b; frequencies are row vectors.
        phases = self.phases + (self.freqs @ m[:, :2, 2:]).squeeze(2)  # (B, C)
        freqs = self.freqs @ m[:, :2, :2]  # (B, C, 2)
        # A user transform that scales the grid down can push frequencies past the
        # bandwidth; fade them out linearly to zero at the Nyquist rate.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Pixel centres in units of 1/sampling_rate, centred on the image.
        coords = (torch.arange(self.size, device=w.device, dtype=w.dtype) + 0.5 - self.size / 2) / self.sampling_rate
        fx, fy = freqs[:, :, 0, None, None], freqs[:, :, 1, None, None]
        x = coords[None, None, None, :] * fx + coords[None, None, :, None] * fy + phases[:, :, None, None]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, :, None, None]  # (B, C, H, W)
        x = torch.einsum("oc,bchw->bohw", self.weight / math.sqrt(self.channels), x)
        return x

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU: x (B, in_channels, in.size, in.size), w (B, w_dim) -> (B, out_channels,
    out.size, out.size).

    The signal is processed at ``lrelu_upsampling`` times the higher of the
    two sampling rates; the ToRGB layer is linear (slope 1, gain 1), 1x1 and
    does no resampling.
    """

    def __init__(self,
                 w_dim: int,                     # W dimensionality.
                 band_in: _Band,                 # Input signal.
                 band_out: _Band,                # Output signal.
                 is_torgb: bool = False,         # The final, linear ToRGB layer.
                 is_critically_sampled: bool = False,  # Output at its Nyquist rate (the last layers).
                 conv_kernel: int = 3,           # Convolution size (1 for ToRGB).
                 filter_size: int = 6,           # Filter taps per sample of the lower rate.
                 lrelu_upsampling: int = 2,      # Oversampling of the nonlinearity.
                 use_radial_filters: bool = False,  # Radial down-sampling filter unless critically sampled.
                 conv_clamp: Optional[float] = 256,  # Clamp of the output, None = off.
                 ):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.in_channels = band_in.channels
        self.out_channels = band_out.channels
        self.in_size = band_in.size
        self.out_size = band_out.size
        self.in_sampling_rate = band_in.sampling_rate
        self.out_sampling_rate = band_out.sampling_rate
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp

        self.affine = FullyConnected(w_dim, self.in_channels, bias_init=1.0)  # Styles start at 1.
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels,
                                               self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(self.out_channels))
        # Running mean square of the input (training only); the input is divided by its root.
        self.register_buffer("magnitude_ema", torch.ones([]))

        rate = max(band_in.sampling_rate, band_out.sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.tmp_sampling_rate = rate
        self.up_factor = self._ratio(rate, band_in.sampling_rate, "up")
        self.down_factor = self._ratio(rate, band_out.sampling_rate, "down")
        # Filter length scales with the resampling factor: filter_size taps per
        # sample at the lower rate. The input filter keeps the input band, the
        # output filter the output band (Sec. 3.2).
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("up_filter", design_lowpass_filter(
            up_taps, band_in.cutoff, 2 * band_in.half_width, rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            down_taps, band_out.cutoff, 2 * band_out.half_width, rate, radial=self.down_radial))

        # Padding of the up-sampled image so that out_size pixels come out. The
        # conv grows the input by k - 1; each filter shrinks by taps - 1. The
        # shift by up // 2 (rounding half up) puts each pixel at the centre of its
        # cell, the symmetric sample placement of Appendix C.3.
        needed = (self.out_size - 1) * self.down_factor + 1 + (up_taps - 1) + (down_taps - 1)
        total = needed - (self.in_size + self.conv_kernel - 1) * self.up_factor
        lo = (total + self.up_factor) // 2
        self.padding = [lo, total - lo, lo, total - lo]  # left, right, top, bottom

    @staticmethod
    def _ratio(high: float, low: float, what: str) -> int:
        factor = int(round(high / low))
        if low * factor != high:
            raise ValueError(f"{what}-sampling factor {high:g}/{low:g} is not an integer; "
                             f"check lrelu_upsampling and the resolution")
        return factor

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, in_size, in_size), (B, w_dim) -> (B, out_channels, out_size, out_size)."""
        assert_shape(x, [None, self.in_channels, self.in_size, self.in_size], "x")
        assert_shape(w, [x.shape[0], self.w_dim], "w")
        styles = self.affine(w)
        if self.is_torgb:
            # Not demodulated: the equalised-learning-rate gain goes on the styles.
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel ** 2))
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        x = filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, up=self.up_factor, down=self.down_factor,
                           padding=self.padding, gain=1.0 if self.is_torgb else LRELU_GAIN,
                           slope=1.0 if self.is_torgb else LRELU_SLOPE, clamp=self.conv_clamp)
        assert_shape(x, [None, self.out_channels, self.out_size, self.out_size], "output")
        return x

    def extra_repr(self) -> str:
        return (f"in={self.in_channels}, out={self.out_channels}, size={self.in_size}->{self.out_size}, "
                f"rate={self.in_sampling_rate:g}->{self.out_sampling_rate:g} (x{self.up_factor}/{self.down_factor}), "
                f"kernel={self.conv_kernel}, torgb={self.is_torgb}, critical={self.is_critically_sampled}, "
                f"radial={self.down_radial}")


class SynthesisNetwork(nn.Module):
    """W+ (B, num_layers + 2, w_dim) -> image (B, img_channels, R, R)."""

    def __init__(self,
                 w_dim: int,                    # W dimensionality.
                 img_resolution: int,           # Output resolution R.
                 img_channels: int,             # Output channels.
                 channel_base: float = 32768,   # Channels = channel_base / 2 / cutoff, ...
                 channel_max: int = 512,        # ... at most this.
                 num_layers: int = 14,          # Synthesis layers, without the input and ToRGB.
                 num_critical: int = 2,         # Critically sampled layers at the end.
                 first_cutoff: float = 2,       # Cutoff of the first layer.
                 first_stopband: float = 2 ** 2.1,   # Minimum stopband of the first layer.
                 last_stopband_rel: float = 2 ** 0.3,  # Minimum stopband of the last layer / its cutoff.
                 margin_size: int = 10,         # Pixels computed outside the image on each side.
                 output_scale: float = 0.25,    # Scale of the output image.
                 **layer_kwargs,                # SynthesisLayer hyper-parameters.
                 ):
        super().__init__()
        if num_layers <= num_critical:
            raise ValueError(f"num_layers={num_layers} must exceed num_critical={num_critical}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_ws = num_layers + 2
        self.output_scale = output_scale
        bands = _layer_bands(img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
                             first_cutoff, first_stopband, last_stopband_rel, margin_size)
        self.input = SynthesisInput(w_dim, bands[0].channels, bands[0].size, bands[0].sampling_rate,
                                    bands[0].cutoff)
        self.layer_names: List[str] = []
        for i in range(num_layers + 1):
            band_in, band_out = bands[max(i - 1, 0)], bands[i]
            layer = SynthesisLayer(w_dim, band_in, band_out, is_torgb=(i == num_layers),
                                   is_critically_sampled=(i >= num_layers - num_critical), **layer_kwargs)
            name = f"L{i}_{band_out.size}_{band_out.channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor, start: int = 0, stop: Optional[int] = None,
                x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, num_ws, w_dim) -> (B, img_channels, R, R); ws[:, 0] drives the input, ws[:, i + 1] layer i.

        Stage 0 is the input, stage i + 1 layer i; ``start`` / ``stop`` run part of them, on ``x``.
        """
        assert_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        ws = ws.to(torch.float32).unbind(dim=1)
        stop = len(self.layer_names) + 1 if stop is None else stop
        if start == 0:
            x = self.input(ws[0])
        for i in range(max(start, 1), stop):
            x = getattr(self, self.layer_names[i - 1])(x, ws[i])
        if stop < len(self.layer_names) + 1:
            return x
        if self.output_scale != 1:
            x = x * self.output_scale
        return x

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}")


# ---------------------------------------------------------------------------
# Generator

# Constructor keywords of NVIDIA's Generator that change the architecture, with
# their defaults (z_dim, w_dim, img_resolution, img_channels are required).
_SYNTHESIS_DEFAULTS = dict(
    channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2,
    first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25,
    conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False, conv_clamp=256,
)
# Keywords that only matter in training (mixed precision, EMA rates, conv layout).
_TRAINING_ONLY = ("num_fp16_res", "magnitude_ema_beta", "fused_modconv_default", "fp16_channels_last", "w_avg_beta")
_MAPPING_KEYS = ("num_layers", "lr_multiplier")
_MAPPING_TRAINING_ONLY = ("w_avg_beta",)


@dataclasses.dataclass
class StyleGAN3Config(GeneratorConfig):
    """The architecture of a :class:`StyleGAN3Generator`; :meth:`from_init_kwargs` reads NVIDIA's keywords."""

    family = "stylegan3"

    z_dim: int                          # Z dimensionality.
    w_dim: int                          # W dimensionality.
    img_resolution: int                 # Output resolution.
    img_channels: int = 3               # Output channels.
    mapping_layers: int = 2             # Dense layers of the mapping.
    mapping_lr_multiplier: float = 0.01  # Learning-rate multiplier of the mapping.
    channel_base: float = 32768         # Synthesis (see SynthesisNetwork for each) ...
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2
    first_stopband: float = 2 ** 2.1
    last_stopband_rel: float = 2 ** 0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False    # True for config R.
    conv_clamp: Optional[float] = 256

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    @property
    def resolution(self) -> int:
        return self.img_resolution

    def synthesis_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in _SYNTHESIS_DEFAULTS}

    def init_kwargs(self) -> dict:
        """NVIDIA's ``Generator(**kwargs)`` for this architecture."""
        return dict(z_dim=self.z_dim, c_dim=0, w_dim=self.w_dim, img_resolution=self.img_resolution,
                    img_channels=self.img_channels,
                    mapping_kwargs={"num_layers": self.mapping_layers, "lr_multiplier": self.mapping_lr_multiplier},
                    **self.synthesis_kwargs())

    @classmethod
    def from_init_kwargs(cls, kwargs: Dict) -> "StyleGAN3Config":
        """The config of NVIDIA's ``Generator(**kwargs)`` (e.g. read from a released pickle).

        Training-only keys are dropped; an unknown key, ``c_dim != 0`` or a
        mapping activation other than 'lrelu' raise ValueError.
        """
        kwargs = copy.deepcopy(dict(kwargs))
        missing = [k for k in ("z_dim", "w_dim", "img_resolution", "img_channels") if k not in kwargs]
        if missing:
            raise ValueError(f"StyleGAN3 init_kwargs lack {', '.join(missing)}")
        for key in _TRAINING_ONLY:
            kwargs.pop(key, None)
        c_dim = kwargs.pop("c_dim", 0)
        if c_dim != 0:
            raise ValueError(f"class-conditional StyleGAN3 (c_dim={c_dim}) is not supported")
        mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
        for key in _MAPPING_TRAINING_ONLY:
            mapping.pop(key, None)
        unknown = sorted(set(mapping) - set(_MAPPING_KEYS) - {"activation"})
        if unknown:
            raise ValueError(f"unknown StyleGAN3 mapping_kwargs: {', '.join(unknown)}")
        activation = mapping.pop("activation", "lrelu")
        if activation != "lrelu":
            raise ValueError(f"mapping activation {activation!r} is not supported; PULSE needs 'lrelu'")
        known = {"z_dim", "w_dim", "img_resolution", "img_channels"} | set(_SYNTHESIS_DEFAULTS)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown StyleGAN3 generator arguments: {', '.join(unknown)}")
        return cls(**kwargs, mapping_layers=mapping.get("num_layers", 2),
                   mapping_lr_multiplier=mapping.get("lr_multiplier", 0.01))


class StyleGAN3Generator(Generator):
    """The full generator: ``mapping`` (z -> w) and ``synthesize`` (W+ -> image); no noise inputs.

    Built from a :class:`StyleGAN3Config`, or from the keyword arguments of NVIDIA's
    ``networks_stylegan3.Generator`` (see :meth:`from_init_kwargs` for a released
    pickle's ``init_kwargs``). Its stages are the input and each synthesis layer.
    """

    family = "stylegan3"
    config_class = StyleGAN3Config
    default_noise_mode = "const"

    def __init__(self, cfg: Optional[StyleGAN3Config] = None, **nvidia_kwargs):
        super().__init__()
        if cfg is None:
            cfg = StyleGAN3Config.from_init_kwargs(nvidia_kwargs)
        elif nvidia_kwargs:
            raise TypeError("pass either a config or NVIDIA's keyword arguments, not both")
        self.cfg = cfg
        # Synthesis first, as in NVIDIA's module, so state_dict() lists keys in their order.
        self.synthesis = SynthesisNetwork(cfg.w_dim, cfg.img_resolution, cfg.img_channels,
                                          **copy.deepcopy(cfg.synthesis_kwargs()))
        self.mapping_network = MappingNetwork(cfg.z_dim, cfg.w_dim, num_layers=cfg.mapping_layers,
                                              lr_multiplier=cfg.mapping_lr_multiplier)

    @classmethod
    def from_init_kwargs(cls, kwargs: Dict) -> "StyleGAN3Generator":
        """Build from the ``init_kwargs`` of NVIDIA's ``Generator`` (see :meth:`StyleGAN3Config.from_init_kwargs`)."""
        return cls(StyleGAN3Config.from_init_kwargs(kwargs))

    @property
    def init_kwargs(self) -> dict:
        return self.cfg.init_kwargs()

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping_network.w_avg

    @property
    def noise_resolutions(self) -> List[int]:
        return []

    @property
    def num_stages(self) -> int:
        return self.cfg.num_layers + 2  # the input, then every layer (the last is the ToRGB)

    def stage_resolution(self, stage: int) -> int:
        k = self._stage(stage)
        if k == 1:
            return int(self.synthesis.input.size)
        return int(getattr(self.synthesis, self.synthesis.layer_names[k - 2]).out_size)

    def _run(self, ws: torch.Tensor, noise: list, start: int, stop: int, features: Features):
        out = self.synthesis(ws, start, stop, features[0] if features else None)
        return out if stop == self.num_stages else (out,)

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, num_ws={self.num_ws}, w_dim={self.w_dim}, "
                f"z_dim={self.z_dim}")
