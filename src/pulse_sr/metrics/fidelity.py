"""Full-reference fidelity metrics: PSNR and SSIM of an output against the HR image.

The PULSE paper lists them for completeness in its Appendix C (Table 1) and notes
that PULSE does not aim to maximise them: a realistic face that downscales
correctly need not be close to the HR face pixel by pixel.

Both take (B, C, H, W) or (C, H, W) tensors and compute in float64. By default
they compare all RGB channels (``channel="rgb"``) with values in [0, 1]; with
``channel="y"`` they compare the Y of MATLAB's ``rgb2ycbcr`` (BT.601, in
[16/255, 235/255]), the usual super-resolution convention.

SSIM is Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error
visibility to structural similarity", IEEE TIP 2004, Eq. 13, with their constants:
an 11×11 Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances, averaged over the positions where the window fits inside the image
(their ``filter2(..., 'valid')``) and then over channels. This equals
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=...)``. Unlike Wang's
MATLAB script, it does not downsample large images first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.color import rgb_to_y

__all__ = ["psnr", "ssim", "rgb_to_y"]

# scikit-image gets the same 11 taps from scipy's gaussian_filter(sigma=1.5, truncate=3.5).
SSIM_WINDOW = 11   # pixels; Wang et al. 2004, Sec. III-C
SSIM_SIGMA = 1.5   # Gaussian window sigma, pixels
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _prepare(x: torch.Tensor, y: torch.Tensor, channel: str, crop_border: int):
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) or (C, H, W) tensors, got shape {tuple(x.shape)}")
    x, y = x.detach().to(torch.float64), y.detach().to(torch.float64)
    if channel == "y":
        if x.shape[1] != 3:
            raise ValueError(f"channel='y' needs RGB images, got {x.shape[1]} channels")
        x, y = rgb_to_y(x), rgb_to_y(y)
    elif channel != "rgb":
        raise ValueError(f"unknown channel {channel!r}; use 'rgb' or 'y'")
    if crop_border:
        c = crop_border
        x, y = x[..., c:-c, c:-c], y[..., c:-c, c:-c]
    return x, y


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, channel: str = "rgb",
         crop_border: int = 0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, one per image: ``10 log10(R^2 / MSE)``.

    Args:
        x, y: (B, C, H, W) or (C, H, W) images with values in [0, data_range].
        data_range: R, the largest possible pixel value.
        channel: ``"rgb"`` (all channels) or ``"y"``.
        crop_border: pixels dropped at each edge first.

    Returns:
        (B,) float64; ``inf`` where the images are equal.
    """
    x, y = _prepare(x, y, channel, crop_border)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable correlation with g ⊗ g, only where the window fits ('valid')."""
    c = x.shape[1]
    gv = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    gh = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, gv, groups=c), gh, groups=c)


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, channel: str = "rgb",
         crop_border: int = 0) -> torch.Tensor:
    """Mean structural similarity, one per image (Wang et al. 2004). 1 means identical.

    Args:
        x, y: (B, C, H, W) or (C, H, W) images with values in [0, data_range], at least
            11×11 after cropping.
        data_range: the largest possible pixel value; sets C1 = (K1 R)^2, C2 = (K2 R)^2.
        channel: ``"rgb"`` (SSIM of each channel, averaged) or ``"y"``.
        crop_border: pixels dropped at each edge first.

    Returns:
        (B,) float64.
    """
    x, y = _prepare(x, y, channel, crop_border)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, "
                         f"got {x.shape[-1]}×{x.shape[-2]}")
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA).to(x.device)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    vx = _filter_valid(x * x, g) - mx * mx
    vy = _filter_valid(y * y, g) - my * my
    cxy = _filter_valid(x * y, g) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))  # Eq. 13
    return s.mean(dim=(-2, -1)).mean(dim=1)

