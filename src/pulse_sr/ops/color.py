"""Colour conversions, in one place: MATLAB's ``rgb2ycbcr`` luma and ``rgb2gray``, and BT.601 gray.

PSNR/SSIM on Y and NIQE read these constants, so every metric converts colour
the same way as the MATLAB code the papers used. The ``gray`` forward operator
uses the same :func:`rgb_to_gray` with BT.601's rounded luma weights, which is
what photo editors apply when they desaturate.
"""

from __future__ import annotations

import torch

# Y of ITU-R BT.601 as MATLAB's rgb2ycbcr: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255.
YCBCR_Y_WEIGHTS = (65.481, 128.553, 24.966)
YCBCR_Y_OFFSET = 16.0
# MATLAB's rgb2gray: the first row of the inverse of the NTSC YIQ matrix.
RGB2GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)
# ITU-R BT.601 luma as the standard rounds it: the ``gray`` operator's weights.
LUMA_BT601 = (0.299, 0.587, 0.114)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) Y of MATLAB's ``rgb2ycbcr``, in [0, 1]."""
    w = x.new_tensor(YCBCR_Y_WEIGHTS).view(1, 3, 1, 1) / 255.0
    return (x * w).sum(dim=1, keepdim=True) + YCBCR_Y_OFFSET / 255.0


def rgb_to_gray(x: torch.Tensor, weights=RGB2GRAY_WEIGHTS) -> torch.Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W) as MATLAB's ``rgb2gray`` (unrounded), same range as the input.

    ``weights`` replaces MATLAB's (e.g. :data:`LUMA_BT601`)."""
    w = x.new_tensor(weights).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)
