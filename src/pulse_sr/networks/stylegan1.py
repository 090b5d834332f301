"""StyleGAN v1 generator (Karras et al., CVPR 2019), the generator PULSE searches.

The layer order and constants follow NVIDIA's official ``networks_stylegan.py``
so that official weights load without any numeric adaptation:

* weights are stored unscaled and multiplied by a runtime coefficient
  (equalised learning rate, ``he_std * lrmul``);
* each synthesis layer ends in the *epilogue*: noise, bias, leaky ReLU,
  instance norm, style modulation;
* upsampling is nearest + 3x3 conv + [1,2,1] blur, or, from 128 px up, the
  fused transposed conv with the 3x3 kernel summed into a 4x4 one.

The module knows nothing about file formats (see :mod:`pulse_sr.formats`) nor
about what was loaded with the weights (see :class:`pulse_sr.model.PulseModel`).

Two run-time choices are constructor arguments, not part of the config, since
they change speed and never results: ``impl``, the epilogue implementation (see
:mod:`pulse_sr.ops.epilogue`), and ``channels_last``, the CPU activation layout.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.epilogue import IMPLS, default_impl, epilogue
from .base import Features, Generator, GeneratorConfig
from .contract import assert_shape
from .layers import FullyConnected, normalize_2nd_moment


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown epilogue impl {impl!r}; choose from {', '.join(IMPLS)}")
    return impl


# ---------------------------------------------------------------------------
# Config


@dataclasses.dataclass
class StyleGAN1Config(GeneratorConfig):
    """Constructor arguments of :class:`StyleGAN1Generator`, saved with the weights."""

    family = "stylegan1"

    resolution: int = 1024            # Output resolution, a power of two in [8, 1024].
    latent_dim: int = 512             # Z dimensionality.
    w_dim: int = 512                  # W (dlatent) dimensionality.
    mapping_layers: int = 8           # Number of dense layers in the mapping network.
    mapping_fmaps: int = 512          # Width of the hidden mapping layers.
    mapping_lrmul: float = 0.01       # Learning-rate multiplier of the mapping network.
    fmap_base: int = 8192             # Overall multiplier for the number of feature maps.
    fmap_decay: float = 1.0           # log2 feature-map reduction when doubling resolution.
    fmap_max: int = 512               # Maximum number of feature maps in any layer.
    num_channels: int = 3             # Output colour channels.
    fused_scale_min_res: int = 128    # Output res from which upsampling uses the fused transposed conv.
    instance_norm_eps: float = 1e-8   # Official TF value.

    def __post_init__(self) -> None:
        log2 = int(round(math.log2(self.resolution))) if self.resolution > 0 else 0
        if self.resolution != 2 ** log2 or not 8 <= self.resolution <= 1024:
            raise ValueError(f"resolution must be a power of two in [8, 1024], got {self.resolution}")
        if self.nf(self.resolution_log2 - 1) < 1:
            raise ValueError(f"fmap_base={self.fmap_base} leaves no channels at {self.resolution} px; "
                             f"raise fmap_base or lower fmap_decay")

    @property
    def resolution_log2(self) -> int:
        return int(round(math.log2(self.resolution)))

    @property
    def num_ws(self) -> int:
        return 2 * self.resolution_log2 - 2

    @property
    def z_dim(self) -> int:
        return self.latent_dim

    def nf(self, stage: int) -> int:
        return min(int(self.fmap_base / (2.0 ** (stage * self.fmap_decay))), self.fmap_max)


# ---------------------------------------------------------------------------
# Layers


def blur_121(x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Depthwise [1,2,1]x[1,2,1]/16 blur with zero padding, (B, C, H, W) -> same, plus an optional bias."""
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :]) / 16.0
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, 3, 3), bias, padding=1, groups=c)


def upscale_nearest2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling; keeps the memory format (channels-last stays so)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class SynthesisLayer(nn.Module):
    """One StyleGAN v1 synthesis layer: [conv] + epilogue (noise, bias, lrelu, IN, style).

    ``kind`` is 'const' (no conv), 'conv' (3x3), 'up' (nearest + 3x3 + blur) or
    'fused_up' (transposed 4x4 + blur).
    """

    def __init__(self,
                 in_channels: int,        # Input channels (ignored for 'const').
                 out_channels: int,       # Output channels.
                 w_dim: int,              # W dimensionality feeding the style affine.
                 resolution: int,         # Output resolution of this layer.
                 kind: str,               # 'const', 'conv', 'up' or 'fused_up'.
                 instance_norm_eps: float = 1e-8,  # Epsilon of the instance norm.
                 impl: str = "auto",      # Epilogue implementation: 'auto', 'ref', 'torch' or 'c'.
                 ):
        super().__init__()
        if kind not in ("const", "conv", "up", "fused_up"):
            raise ValueError(f"unknown layer kind {kind!r}")
        self.kind = kind
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.instance_norm_eps = instance_norm_eps
        if kind == "const":
            self.const = nn.Parameter(torch.ones(1, out_channels, 4, 4))
        else:
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
            self.weight_gain = math.sqrt(2) / math.sqrt(in_channels * 9)
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = FullyConnected(w_dim, 2 * out_channels)
        self.impl = _check_impl(impl)

    def convolve(self, x: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The layer's convolution, with ``bias`` added at the end (after the blur) if given."""
        if self.kind == "const":
            return x if bias is None else x + bias.view(1, -1, 1, 1)
        w = self.weight * self.weight_gain
        if self.kind == "conv":
            return F.conv2d(x, w, bias, padding=1)
        if self.kind == "up":
            return blur_121(F.conv2d(upscale_nearest2x(x), w, padding=1), bias)
        # Fused: pad the 3x3 kernel to 5x5 and sum the four shifted 4x4 windows,
        # then use it as a stride-2 transposed conv (official upscale2d_conv2d).
        w = F.pad(w, (1, 1, 1, 1))
        w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=1)
        return blur_121(x, bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        # The fast paths let the last convolution (the blur, after upsampling)
        # add the bias, which saves a full-size pass; the reference path adds it
        # in the epilogue, as the official code does. The sum is the same.
        if self.impl != "ref" and self.kind != "const":
            x = self.convolve(x, self.bias)
            bias = None
        else:
            x = self.convolve(x)
            bias = self.bias
        style = self.style(w).view(-1, 2, self.out_channels)
        gamma, beta = style[:, 0] + 1.0, style[:, 1]
        return epilogue(x, noise, self.noise_strength, bias, gamma, beta, self.instance_norm_eps, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, in={self.in_channels}, out={self.out_channels}, res={self.resolution}, "
                f"impl={self.impl}")


class ToRGB(nn.Module):
    """1x1 conv to RGB with gain 1."""

    def __init__(self,
                 in_channels: int,        # Input channels.
                 num_channels: int = 3,   # Output channels.
                 ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.weight_gain, self.bias)


class MappingNetwork(nn.Module):
    """Z -> W: pixel norm, then ``mapping_layers`` dense layers with leaky ReLU 0.2."""

    def __init__(self,
                 latent_dim: int = 512,   # Z dimensionality.
                 w_dim: int = 512,        # W dimensionality.
                 num_layers: int = 8,     # Number of dense layers.
                 fmaps: int = 512,        # Hidden width.
                 lrmul: float = 0.01,     # Learning-rate multiplier.
                 ):
        super().__init__()
        self.latent_dim = latent_dim
        self.w_dim = w_dim
        widths = [latent_dim] + [fmaps] * (num_layers - 1) + [w_dim]
        self.layers = nn.ModuleList(
            FullyConnected(widths[i], widths[i + 1], lr_multiplier=lrmul, weight_gain=math.sqrt(2))
            for i in range(num_layers))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert_shape(z, [None, self.latent_dim], "z")
        x = normalize_2nd_moment(z)  # TF StyleGAN's pixel norm of the latent
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
        return x


class SynthesisNetwork(nn.Module):
    """W+ (B, num_ws, w_dim) and per-layer noise -> image (B, 3, R, R)."""

    def __init__(self,
                 cfg: StyleGAN1Config,    # Architecture.
                 impl: str = "auto",      # Epilogue implementation of every layer.
                 channels_last: bool = True,  # NHWC activations on CPU.
                 ):
        super().__init__()
        self.cfg = cfg
        eps = cfg.instance_norm_eps
        layers = [SynthesisLayer(0, cfg.nf(1), cfg.w_dim, 4, "const", eps, impl),
                  SynthesisLayer(cfg.nf(1), cfg.nf(1), cfg.w_dim, 4, "conv", eps, impl)]
        for log2 in range(3, cfg.resolution_log2 + 1):
            res = 2 ** log2
            cin, cout = cfg.nf(log2 - 2), cfg.nf(log2 - 1)
            kind = "fused_up" if res >= cfg.fused_scale_min_res else "up"
            layers.append(SynthesisLayer(cin, cout, cfg.w_dim, res, kind, eps, impl))
            layers.append(SynthesisLayer(cout, cout, cfg.w_dim, res, "conv", eps, impl))
        self.layers = nn.ModuleList(layers)
        self.torgb = ToRGB(cfg.nf(cfg.resolution_log2 - 1), cfg.num_channels)
        # NHWC activations on CPU: oneDNN convolutions (transposed ones above all)
        # and the depthwise blur run several times faster; results are unchanged.
        # On an H200 cuDNN was twice as fast with NCHW (0.016 vs 0.032 s per
        # 1024-px step), so CUDA keeps NCHW. The C epilogue needs NHWC.
        self.channels_last = bool(channels_last)
        # The official pickles carry one fixed noise map per layer ('const' noise mode).
        for i, layer in enumerate(self.layers):
            self.register_buffer(f"noise_const{i}", torch.randn(1, 1, layer.resolution, layer.resolution))

    @property
    def noise_shapes(self) -> List[int]:
        return [layer.resolution for layer in self.layers]

    def forward(self, ws: torch.Tensor, noise: Sequence[Optional[torch.Tensor]],
                num_layers: Optional[int] = None, start: int = 0,
                x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Run layers ``start`` .. ``num_layers - 1`` (all by default) on ``x`` (the learned constant when
        ``start`` is 0); the image after the last layer, else the features."""
        n = len(self.layers)
        assert_shape(ws, [None, n, self.cfg.w_dim], "ws")
        if len(noise) != n:
            raise ValueError(f"noise: expected {n} maps, got {len(noise)}")
        if start == 0:
            x = self.layers[0].const.expand(ws.shape[0], -1, -1, -1)
        if self.channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        stop = n if num_layers is None else num_layers
        for i in range(start, stop):
            x = self.layers[i](x, ws[:, i], noise[i])
        if stop < n:
            return x
        return self.torgb(x)


class StyleGAN1Generator(Generator):
    """The full generator: ``mapping`` (Z -> W) and ``synthesize`` (W+, noise -> image).

    Built from a :class:`StyleGAN1Config` or its fields as keywords. ``impl``
    (default: :func:`pulse_sr.ops.epilogue.default_impl`) and ``channels_last``
    choose how, not what, it computes; :meth:`set_impl` changes the former later.
    Its stages (:class:`~pulse_sr.networks.base.Generator`) are its synthesis layers.
    """

    family = "stylegan1"
    config_class = StyleGAN1Config
    default_truncation_cutoff = 8

    def __init__(self, cfg: Optional[StyleGAN1Config] = None, *, impl: Optional[str] = None,
                 channels_last: bool = True, **kwargs):
        super().__init__()
        if cfg is None:
            cfg = StyleGAN1Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments, not both")
        self.cfg = cfg
        self.mapping_network = MappingNetwork(cfg.latent_dim, cfg.w_dim, cfg.mapping_layers,
                                              cfg.mapping_fmaps, cfg.mapping_lrmul)
        self.synthesis = SynthesisNetwork(cfg, _check_impl(impl or default_impl()), channels_last)
        # Running mean of W, used for the truncation trick when sampling.
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    @property
    def impl(self) -> str:
        return self.synthesis.layers[0].impl

    def set_impl(self, impl: str) -> "StyleGAN1Generator":
        """Use epilogue implementation ``impl`` in every layer (see :mod:`pulse_sr.ops.epilogue`)."""
        _check_impl(impl)
        for layer in self.synthesis.layers:
            layer.impl = impl
        return self

    def set_channels_last(self, channels_last: bool) -> "StyleGAN1Generator":
        """Run CPU activations as NHWC (True, faster with oneDNN, needed by impl='c') or NCHW."""
        self.synthesis.channels_last = bool(channels_last)
        return self

    @property
    def noise_resolutions(self) -> List[int]:
        return self.synthesis.noise_shapes

    def _stored_noise(self, i: int) -> torch.Tensor:
        return getattr(self.synthesis, f"noise_const{i}")

    @property
    def num_stages(self) -> int:
        return len(self.synthesis.layers)

    def stage_resolution(self, stage: int) -> int:
        return self.synthesis.layers[self._stage(stage) - 1].resolution

    def _run(self, ws: torch.Tensor, noise: list, start: int, stop: int, features: Features):
        out = self.synthesis(ws, noise, num_layers=stop, start=start, x=features[0] if features else None)
        return out if stop == self.num_stages else (out,)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"resolution={c.resolution}, num_ws={c.num_ws}, w_dim={c.w_dim}, impl={self.impl}"
