"""StyleGAN2 generator (Karras et al., CVPR 2020), as trained by NVIDIA's stylegan2-ada-pytorch and stylegan3.

Parameter and buffer names follow NVIDIA's torch layout (``synthesis.b64.conv0.affine.weight``,
``...noise_const``, ``...resample_filter``), except that the mapping network is
``mapping_network`` (``mapping(z)`` is a method here, as for every PULSE
generator). A state dict read from their pickles, converted from their TF
pickles or from rosinality's checkpoints therefore loads by name
(:mod:`pulse_sr.formats`).

What is computed is theirs; how differs where it is faster on a CPU and the
same up to float rounding:

* **Modulation is applied to the activations, not the weights.** NVIDIA's
  inference path builds per-sample weights ``W * s * d`` and runs a grouped
  convolution, so the backward pass PULSE needs (gradients for W+ only)
  computes a full weight gradient per layer. Here the input is scaled by the
  styles ``s``, convolved with the shared weight and the output scaled by the
  demodulation ``d`` (NVIDIA's own ``fused_modconv=False`` form): the backward
  pass needs only the input gradient plus two cheap reductions.
* The leaky ReLU's gain √2 is folded into ``d`` and the bias, and the 4×4 FIR
  filters (``[1,3,3,1]`` outer products) run as two 1-D passes.
* Layers NVIDIA runs in fp16 on a GPU run in fp32 (as NVIDIA's code does off-GPU).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import frozen_conv
from .fir import setup_filter, upfirdn, upsample2d
from .base import Features, Generator, GeneratorConfig
from .layers import (LRELU_GAIN, LRELU_SLOPE, FullyConnected, MappingNetwork, assert_shape, clamp_abs,
                     scale_channels)

ARCHITECTURES = ("skip", "orig", "resnet")

# Constructor keywords of NVIDIA's generators that change nothing PULSE computes
# in fp32 (precision, memory layout and training-time switches).
IGNORED_KWARGS = frozenset({"num_fp16_res", "fp16_channels_last", "fused_modconv_default", "use_noise"})


# ---------------------------------------------------------------------------
# Config


@dataclasses.dataclass
class StyleGAN2Config(GeneratorConfig):
    """Constructor arguments of :class:`StyleGAN2Generator`; see :meth:`from_init_kwargs` for NVIDIA's."""

    family = "stylegan2"

    z_dim: int = 512                     # Input latent (Z) dimensionality.
    w_dim: int = 512                     # Intermediate latent (W) dimensionality.
    img_resolution: int = 1024           # Output resolution, a power of two in [4, 1024].
    img_channels: int = 3                # Output colour channels.
    mapping_layers: int = 8              # Dense layers in the mapping network.
    mapping_layer_features: Optional[int] = None  # Hidden width of the mapping, None = w_dim.
    mapping_lr_multiplier: float = 0.01  # Learning-rate multiplier of the mapping.
    channel_base: int = 32768            # Channels at resolution r: min(channel_base // r, channel_max) ...
    channel_max: int = 512               # ... unless ``channels`` lists them.
    channels: Optional[Dict[int, int]] = None  # Explicit {resolution: channels} (rosinality, odd TF configs).
    conv_clamp: Optional[float] = None   # Clamp conv outputs to ±X (256 in NVIDIA's torch pickles), None = off.
    architecture: str = "skip"           # 'skip' (config e/f), 'orig' or 'resnet' synthesis.
    resample_filter: Tuple[int, ...] = (1, 3, 3, 1)  # FIR taps used when upsampling.

    def __post_init__(self) -> None:
        r = self.img_resolution
        if not (isinstance(r, int) and 4 <= r <= 1024 and r & (r - 1) == 0):
            raise ValueError(f"img_resolution must be a power of two in [4, 1024], got {r!r}")
        for name in ("z_dim", "w_dim", "img_channels", "mapping_layers"):
            v = getattr(self, name)
            if not (isinstance(v, int) and 1 <= v <= (4096 if name != "mapping_layers" else 32)):
                raise ValueError(f"{name} must be a positive integer of sane size, got {v!r}")
        if self.img_channels > 4:
            raise ValueError(f"img_channels must be 1 to 4, got {self.img_channels}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if self.channels is not None:
            self.channels = {int(k): int(v) for k, v in self.channels.items()}
        for res in self.block_resolutions:
            c = self.nf(res)
            if not 1 <= c <= 4096:
                raise ValueError(f"{c} channels at {res} px is not in [1, 4096]")
        taps = tuple(self.resample_filter)
        if not (1 <= len(taps) <= 16 and all(isinstance(t, (int, float)) for t in taps) and sum(taps) != 0):
            raise ValueError(f"resample_filter must be 1 to 16 numbers with a non-zero sum, got {taps!r}")
        self.resample_filter = taps

    @property
    def block_resolutions(self) -> List[int]:
        return [2 ** i for i in range(2, int(math.log2(self.img_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        return 2 * len(self.block_resolutions)  # convs (1 + 2 per block) plus the last ToRGB

    @property
    def resolution(self) -> int:
        return self.img_resolution

    def nf(self, res: int) -> int:
        if self.channels is not None:
            if res not in self.channels:
                raise ValueError(f"channels gives no count for {res} px")
            return self.channels[res]
        return min(self.channel_base // res, self.channel_max)

    def parameter_count(self) -> int:
        """Elements of the state dict, from the numbers alone (checked before anything is allocated)."""
        hidden = self.mapping_layer_features or self.w_dim
        feats = [self.z_dim] + [hidden] * (self.mapping_layers - 1) + [self.w_dim]
        n = sum(a * b + b for a, b in zip(feats[:-1], feats[1:])) + self.w_dim
        taps = len(self.resample_filter)
        fir = taps * taps if taps < 8 else taps

        def layer(cin, cout, res):  # affine, weight, bias, noise strength + map, filter
            return self.w_dim * cin + cin + cout * cin * 9 + cout + 1 + res * res + fir

        def torgb(cin):
            return self.w_dim * cin + cin + self.img_channels * cin + self.img_channels

        for res in self.block_resolutions:
            cout = self.nf(res)
            n += fir
            if res == 4:
                n += cout * 16 + layer(cout, cout, res)
            else:
                cin = self.nf(res // 2)
                n += layer(cin, cout, res) + layer(cout, cout, res)
                if self.architecture == "resnet":
                    n += cout * cin + fir
            if res == self.img_resolution or self.architecture == "skip":
                n += torgb(cout)
        return n

    @classmethod
    def from_init_kwargs(cls, kwargs: dict, what: str = "generator") -> "StyleGAN2Config":
        """The config of NVIDIA's ``Generator(**kwargs)``, from a pickle's recorded constructor arguments.

        Takes both stylegan2-ada-pytorch's form (``synthesis_kwargs={...}``) and
        stylegan3's (synthesis arguments at the top level). Anything that would
        change the network and is not understood is an error naming it.
        """
        kw = dict(kwargs)
        syn = dict(kw.pop("synthesis_kwargs", None) or {})
        mapping = dict(kw.pop("mapping_kwargs", None) or {})
        c_dim = kw.pop("c_dim", 0)
        if c_dim:
            raise ValueError(f"{what}: a class-conditional generator (c_dim={c_dim}); PULSE searches the "
                             f"unconditional latent space, and class-conditional models are not supported")
        for k in list(kw):
            if k not in ("z_dim", "w_dim", "img_resolution", "img_channels"):
                syn[k] = kw.pop(k)
        if mapping.pop("activation", "lrelu") != "lrelu":
            raise ValueError(f"{what}: its mapping does not end in a leaky ReLU, which PULSE's Gaussian fit "
                             f"inverts (supplement Sec. 2.4)")
        for k in ("embed_features", "w_avg_beta", "num_ws"):  # labels (c_dim > 0), training, broadcast
            mapping.pop(k, None)
        if syn.pop("use_noise", True) is False:
            raise ValueError(f"{what}: use_noise=False generators are not supported")
        for k in IGNORED_KWARGS:
            syn.pop(k, None)
        if syn.pop("activation", "lrelu") != "lrelu":
            raise ValueError(f"{what}: only leaky-ReLU synthesis layers are supported")
        if syn.pop("kernel_size", 3) != 3:
            raise ValueError(f"{what}: only 3x3 synthesis convolutions are supported")
        fields = {f.name for f in dataclasses.fields(cls)}
        args = dict(kw)
        rename = {"num_layers": "mapping_layers", "layer_features": "mapping_layer_features",
                  "lr_multiplier": "mapping_lr_multiplier"}
        for k, v in mapping.items():
            if k not in rename:
                raise ValueError(f"{what}: unknown mapping argument {k!r}")
            args[rename[k]] = v
        for k, v in syn.items():
            if k not in fields:
                raise ValueError(f"{what}: unknown synthesis argument {k!r}")
            args[k] = v
        try:
            return cls(**args)
        except TypeError as exc:
            raise ValueError(f"{what}: {exc}") from None


# ---------------------------------------------------------------------------
# Layers


def demodulation(weight: torch.Tensor, styles: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 / ||W_o * s|| per sample and output channel: (O, I, k, k) and (B, I) -> (B, O)."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + eps).rsqrt()


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (optionally 2× up), demodulation, noise, bias, leaky ReLU, clamp."""

    def __init__(self,
                 in_channels: int,                 # Input channels.
                 out_channels: int,                # Output channels.
                 w_dim: int,                       # W dimensionality.
                 resolution: int,                  # Output resolution.
                 up: int = 1,                      # 1, or 2 to upsample first.
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
                 conv_clamp: Optional[float] = None,  # Clamp the output to ±X, None = off.
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: Optional[torch.Tensor] = None,
                gain: float = 1.0) -> torch.Tensor:
        """(B, in, r/up, r/up), (B, w_dim), optional (B or 1, 1, r, r) noise -> (B, out, r, r)."""
        assert_shape(x, [None, self.in_channels, self.resolution // self.up, self.resolution // self.up], "x")
        styles = self.affine(w)
        g = LRELU_GAIN * gain  # lrelu(v) * g == lrelu(g * v): the gain goes into d and the bias
        d = demodulation(self.weight, styles) * g
        x = scale_channels(x, styles)
        if self.up == 1:
            x = frozen_conv.conv2d(x, self.weight, padding=1)
        else:
            # Transposed conv then the FIR filter: the padding that makes NVIDIA's
            # conv2d_resample(up=2) output exactly 2r x 2r.
            x = frozen_conv.conv_transpose2d(x, self.weight.transpose(0, 1), stride=2)
            taps = self.resample_filter.shape[-1]
            p0 = (taps + 1) // 2 - 2 + 1
            p1 = (taps - 2) // 2 + 1 - 1
            x = upfirdn(x, self.resample_filter, padding=(p0, p1, p0, p1), gain=4.0)
        x = scale_channels(x, d, self.bias * g)
        if noise is not None:
            x = x + noise * (self.noise_strength * g)
        x = F.leaky_relu(x, LRELU_SLOPE)
        return clamp_abs(x, None if self.conv_clamp is None else self.conv_clamp * gain)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGB(nn.Module):
    """Modulated 1×1 conv without demodulation, plus bias, clamped; features -> image contribution."""

    def __init__(self,
                 in_channels: int,                 # Input channels.
                 out_channels: int,                # Image channels.
                 w_dim: int,                       # W dimensionality.
                 conv_clamp: Optional[float] = None,  # Clamp the output to ±X, None = off.
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, in, r, r), (B, w_dim) -> (B, out, r, r)."""
        styles = self.affine(w) * self.weight_gain
        # A 1x1 conv to 3 channels is a (B, 3, in) @ (B, in, r*r) product: with the styles in
        # that small per-sample weight, the full-size modulated input is never built.
        b, c, h, wd = x.shape
        weight = self.weight.reshape(1, self.out_channels, c) * styles.reshape(b, 1, c)
        x = torch.baddbmm(self.bias.reshape(1, -1, 1), weight, x.reshape(b, c, h * wd))
        return clamp_abs(x.reshape(b, -1, h, wd), self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}"


class ResnetSkip(nn.Module):
    """The 'resnet' architecture's shortcut: 1×1 conv, then 2× FIR upsampling, no bias."""

    def __init__(self,
                 in_channels: int,                 # Input channels.
                 out_channels: int,                # Output channels.
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
                 ):
        super().__init__()
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = frozen_conv.conv2d(x, self.weight * (self.weight_gain * gain))
        return upsample2d(x, self.resample_filter)


class SynthesisBlock(nn.Module):
    """One resolution: (const or 2× up conv), conv, and the ToRGB of the skip architecture."""

    def __init__(self,
                 in_channels: int,                 # Input channels, 0 = the 4×4 block (learned constant).
                 out_channels: int,                # Output channels.
                 w_dim: int,                       # W dimensionality.
                 resolution: int,                  # Resolution of this block.
                 img_channels: int,                # Image channels.
                 is_last: bool,                    # The last block (always has a ToRGB).
                 architecture: str = "skip",       # 'skip', 'orig' or 'resnet'.
                 resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
                 conv_clamp: Optional[float] = None,  # Clamp conv outputs to ±X.
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.has_torgb = is_last or architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        if in_channels != 0 and architecture == "resnet":
            self.skip = ResnetSkip(in_channels, out_channels, resample_filter)

    @property
    def num_conv(self) -> int:
        return 1 if self.in_channels == 0 else 2

    @property
    def layers(self) -> List[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise: Sequence[Optional[torch.Tensor]]):
        """``ws`` (B, num_conv + has_torgb, w_dim), one noise entry per conv -> (features, image so far)."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise[0])
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], noise[0])
            x = self.conv1(x, ws[:, 1], noise[1], gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x, ws[:, 0], noise[0])
            x = self.conv1(x, ws[:, 1], noise[1])
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.has_torgb:
            y = self.torgb(x, ws[:, self.num_conv]).contiguous()
            img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}"


class SynthesisNetwork(nn.Module):
    """W+ (B, num_ws, w_dim) plus noise -> image, through blocks ``b4`` ... ``b{R}``."""

    def __init__(self, cfg: StyleGAN2Config):
        super().__init__()
        self.cfg = cfg
        self.block_resolutions = cfg.block_resolutions
        for res in self.block_resolutions:
            block = SynthesisBlock(cfg.nf(res // 2) if res > 4 else 0, cfg.nf(res), cfg.w_dim, res,
                                   cfg.img_channels, is_last=res == cfg.img_resolution,
                                   architecture=cfg.architecture, resample_filter=cfg.resample_filter,
                                   conv_clamp=cfg.conv_clamp)
            setattr(self, f"b{res}", block)

    def blocks(self) -> List[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise: Sequence[Optional[torch.Tensor]], start: int = 0,
                stop: Optional[int] = None, features: Features = ()):
        """Blocks ``start`` .. ``stop - 1`` (all by default) on ``features`` = (x, image so far); the image
        after the last block, else the (x, image so far) it leaves."""
        blocks = self.blocks()
        stop = len(blocks) if stop is None else stop
        x, img = (tuple(features) + (None, None))[:2] if start else (None, None)
        w_idx = n_idx = 0
        for k, block in enumerate(blocks[:stop]):
            if k >= start:
                # A block's ToRGB shares its W with the next block's first conv (NVIDIA's indexing).
                x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1],
                               noise[n_idx:n_idx + block.num_conv])
            w_idx += block.num_conv
            n_idx += block.num_conv
        return img if stop == len(blocks) else (x, img)


class StyleGAN2Generator(Generator):
    """``mapping`` (Z -> W) and ``synthesize`` (W+, noise -> image) for a StyleGAN2 / StyleGAN2-ADA network.

    Its stages (:class:`~pulse_sr.networks.base.Generator`) are its resolution blocks, and their
    features are (x, the skip image so far). Activations stay NCHW: unlike StyleGAN v1 here,
    channels-last made a 256-px step 3-4x slower on a CPU (the transposed and depthwise convs).
    """

    family = "stylegan2"
    config_class = StyleGAN2Config

    def __init__(self, cfg: Optional[StyleGAN2Config] = None, **kwargs):
        super().__init__()
        if cfg is None:
            cfg = StyleGAN2Config(**kwargs)
        elif kwargs:
            raise TypeError("pass either a config or keyword arguments, not both")
        self.cfg = cfg
        self.synthesis = SynthesisNetwork(cfg)
        self.mapping_network = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers,
                                              cfg.mapping_layer_features, cfg.mapping_lr_multiplier)

    @classmethod
    def from_init_kwargs(cls, kwargs: dict, what: str = "generator") -> "StyleGAN2Generator":
        return cls(StyleGAN2Config.from_init_kwargs(kwargs, what))

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping_network.w_avg

    def noise_layers(self) -> List[SynthesisLayer]:
        return [layer for block in self.synthesis.blocks() for layer in block.layers]

    @property
    def noise_resolutions(self) -> List[int]:
        return [layer.resolution for layer in self.noise_layers()]

    def _stored_noise(self, i: int) -> torch.Tensor:
        return self.noise_layers()[i].noise_const

    @property
    def num_stages(self) -> int:
        return len(self.cfg.block_resolutions)

    def stage_resolution(self, stage: int) -> int:
        return self.cfg.block_resolutions[self._stage(stage) - 1]

    def _run(self, ws: torch.Tensor, noise: list, start: int, stop: int, features: Features):
        return self.synthesis(ws.to(torch.float32), noise, start, stop, features)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"resolution={c.img_resolution}, num_ws={c.num_ws}, w_dim={c.w_dim}, architecture={c.architecture}"
