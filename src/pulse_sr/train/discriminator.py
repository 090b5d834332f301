"""A small residual discriminator for training the bundled model (not part of PULSE itself)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..networks.layers import FullyConnected


class EqConv2d(nn.Module):
    """Conv with equalised learning rate."""

    def __init__(self,
                 in_channels: int,        # Input channels.
                 out_channels: int,       # Output channels.
                 kernel_size: int,        # Square kernel size (odd).
                 bias: bool = True,       # Add a learned bias.
                 ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.gain, self.bias, padding=self.padding)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * math.sqrt(2)


class DBlock(nn.Module):
    """Two 3x3 convs and a 2x average-pool downsample, with a 1x1 skip (StyleGAN2's resnet D)."""

    def __init__(self,
                 in_channels: int,        # Input channels.
                 out_channels: int,       # Output channels.
                 ):
        super().__init__()
        self.conv0 = EqConv2d(in_channels, in_channels, 3)
        self.conv1 = EqConv2d(in_channels, out_channels, 3)
        self.skip = EqConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(F.avg_pool2d(x, 2))
        x = _act(self.conv0(x))
        x = F.avg_pool2d(_act(self.conv1(x)), 2)
        return (x + y) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """(B, 3, R, R) in [-1, 1] -> (B,) logits."""

    def __init__(self,
                 resolution: int = 64,    # Input resolution.
                 channel_base: int = 4096,  # Channels = min(channel_base / res, channel_max).
                 channel_max: int = 256,  # Channel cap.
                 mbstd_group: int = 4,    # Minibatch-stddev group size.
                 ):
        super().__init__()
        self.resolution = resolution
        self.mbstd_group = mbstd_group

        def ch(res: int) -> int:
            return min(channel_base // res, channel_max)

        self.from_rgb = EqConv2d(3, ch(resolution), 1)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(DBlock(ch(res), ch(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = ch(4)
        self.conv = EqConv2d(c4 + 1, c4, 3)
        self.fc = FullyConnected(c4 * 16, c4)
        self.out = FullyConnected(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = _act(self.from_rgb(img))
        x = self.blocks(x)
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        if b % g:
            g = 1
        y = x.reshape(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = torch.cat([x, y], dim=1)
        x = _act(self.conv(x))
        x = _act(self.fc(x.flatten(1)))
        return self.out(x).squeeze(1)
