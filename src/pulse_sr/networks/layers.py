"""Layers shared by the StyleGAN2 and StyleGAN3 generators.

Parameter names and initial values follow NVIDIA's stylegan2-ada-pytorch /
stylegan3 layout (``fc0.weight``, ``affine.bias``, ``w_avg``, ...), so a state
dict read from their pickles loads by name. Weights are stored unscaled and
multiplied by a runtime gain (equalised learning rate).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .contract import assert_shape

LRELU_SLOPE = 0.2             # Every StyleGAN's leaky ReLU; the Gaussian fit inverts it (supplement Sec. 2.4).
LRELU_GAIN = math.sqrt(2.0)   # The gain NVIDIA's bias_act applies after a leaky ReLU.

__all__ = ["LRELU_GAIN", "LRELU_SLOPE", "FullyConnected", "MappingNetwork", "assert_shape",
           "bias_lrelu", "clamp_abs", "normalize_2nd_moment", "scale_channels"]


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """(B, C, ...) scaled so that the mean square along ``dim`` is 1."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_lrelu(x: torch.Tensor, bias: Optional[torch.Tensor], gain: float = LRELU_GAIN,
               clamp: Optional[float] = None) -> torch.Tensor:
    """Bias (broadcast over dim 1), leaky ReLU 0.2, times ``gain``, clamped to ±``clamp``; (B, C, ...) -> same."""
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2))
    x = F.leaky_relu(x, LRELU_SLOPE)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def clamp_abs(x: torch.Tensor, limit: Optional[float]) -> torch.Tensor:
    """``x`` clamped to ±``limit`` (NVIDIA's ``conv_clamp``); None = no clamp.

    The clamp rarely binds, and in autograd it costs a pass forward and a mask
    backward. On a CPU a max-abs check (one read, no graph) decides whether it
    is needed; on a GPU that check would be a host sync per layer, so it always runs.
    """
    if limit is None:
        return x
    if x.device.type == "cpu":
        lo, hi = torch.aminmax(x.detach())  # one read, no temporary
        if -limit <= float(lo) and float(hi) <= limit:
            return x
    return F.hardtanh(x, -limit, limit)


class _ScaleChannels(torch.autograd.Function):
    """``x * scale + shift`` per (sample, channel); the scale's gradient as a dot product, no temporary."""

    @staticmethod
    def forward(ctx, x, scale, shift):
        ctx.save_for_backward(x, scale)
        ctx.shift_shape = None if shift is None else shift.shape
        s = scale.reshape(*scale.shape, 1, 1)
        if shift is None:
            return x * s
        return torch.addcmul(shift.reshape(shift.shape[0] if shift.ndim == 2 else 1, -1, 1, 1), x, s)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        gx = gs = gb = None
        if ctx.needs_input_grad[0]:
            gx = grad * scale.reshape(*scale.shape, 1, 1)
        if ctx.needs_input_grad[1]:
            gs = torch.einsum("bchw,bchw->bc", grad, x)  # 5x faster than mul + sum at 32 x 1024²
        if ctx.needs_input_grad[2]:
            gb = grad.sum(dim=[2, 3])
            gb = gb if len(ctx.shift_shape) == 2 else gb.sum(0)
        return gx, gs, gb


def scale_channels(x: torch.Tensor, scale: torch.Tensor, shift: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C, H, W) times (B, C), plus an optional (C,) or (B, C) shift -> (B, C, H, W).

    The same as ``x * scale[..., None, None] + shift[..., None, None]``, but its
    backward reads ``x`` once for the scale's gradient instead of building the
    full-size product first (StyleGAN2's styles and demodulation, every layer).
    """
    return _ScaleChannels.apply(x, scale, shift)


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate, optionally followed by leaky ReLU 0.2 (× √2).

    The one dense layer of every network here: StyleGAN2/3 (NVIDIA's
    ``FullyConnectedLayer``), StyleGAN v1 (``weight_gain`` √2, the He gain its
    TF code folds into the weight) and the training discriminator. ``weight``
    is (out, in), stored unscaled; the runtime gain is
    ``weight_gain * lr_multiplier / sqrt(in_features)``.
    """

    def __init__(self,
                 in_features: int,           # Input width.
                 out_features: int,          # Output width.
                 lrelu: bool = False,        # Leaky ReLU after the bias (else linear).
                 lr_multiplier: float = 1.0, # Learning-rate multiplier (runtime gain on weight and bias).
                 bias_init: float = 0.0,     # Initial bias (1 for style affines: styles start at 1).
                 weight_gain: float = 1.0,   # He-init gain on the weight (√2 in StyleGAN v1's dense layers).
                 ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = weight_gain * lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_features) -> (B, out_features)."""
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_lrelu(x.matmul(w.t()), b)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, lrelu={self.lrelu}"


class MappingNetwork(nn.Module):
    """Z -> W: normalise z, then ``num_layers`` dense layers with leaky ReLU, the last one included.

    The final activation is what PULSE's Gaussian fit undoes, so it is fixed to
    leaky ReLU 0.2 here; a file asking for another activation is refused by the
    loader. ``w_avg`` (the running mean of W) is kept for truncation only.
    """

    def __init__(self,
                 z_dim: int,                    # Input latent (Z) dimensionality.
                 w_dim: int,                    # Intermediate latent (W) dimensionality.
                 num_layers: int = 8,           # Number of dense layers.
                 layer_features: Optional[int] = None,  # Hidden width, None = w_dim.
                 lr_multiplier: float = 0.01,   # Learning-rate multiplier of every layer.
                 ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"the mapping needs at least one layer, got num_layers={num_layers}")
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_layers = num_layers
        hidden = w_dim if layer_features is None else layer_features
        features = [z_dim] + [hidden] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], lrelu=True,
                                                   lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> (B, w_dim), not broadcast to W+."""
        assert_shape(z, [None, self.z_dim], "z")
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_layers={self.num_layers}"
