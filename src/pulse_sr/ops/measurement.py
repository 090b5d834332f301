"""What the user measured, as one value: the forward operator, the target, the pixels that count, the noise.

PULSE minimises ``||A(G(z)) − y||`` over the pixels that count and judges the
result against ε (Sec. 3 of the paper). :class:`Measurement` holds A, y, the
mask and the noise model together, so the loss and the certificate read one
object; the operator no longer doubles as the loss mask.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ..errors import SettingsError
from .operators import Compose


@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """Gaussian noise of std ``sigma`` (0–255 scale) that the input carries; 0 for a clean input."""

    sigma: float = 0.0

    def __post_init__(self):
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and 0 <= self.sigma <= 255):
            raise SettingsError(f"noise sigma must be a finite number in [0, 255], got {self.sigma}")

    @property
    def extra_eps(self) -> float:
        """The expected extra mean square residual of this noise, (σ/255)²: what ε grows by."""
        return (self.sigma / 255) ** 2


@dataclasses.dataclass(frozen=True)
class Measurement:
    """``y = A(x) + n`` on the pixels where ``mask`` is 1 (all of them when it is None).

    ``target`` is (B, C, h, w); ``mask`` (1, 1, h, w) of 0/1.
    """

    operator: Compose
    target: torch.Tensor
    mask: Optional[torch.Tensor] = None
    noise: NoiseModel = NoiseModel()

    @classmethod
    def of(cls, operator: Compose, target: torch.Tensor, noise: Optional[NoiseModel] = None) -> "Measurement":
        """The measurement of ``target`` through ``operator``, whose parts say which pixels count."""
        return cls(operator, target, operator.mask, noise or NoiseModel())

    def eps(self, eps: float) -> float:
        """The success threshold on this measurement: ε plus what the noise adds."""
        return eps + self.noise.extra_eps if self.noise.sigma else eps

    def repeat(self, samples: int) -> "Measurement":
        """The same measurement for ``samples`` searches per input (sample k of input n is row n·K + k)."""
        return dataclasses.replace(self, target=self.target.repeat_interleave(samples, dim=0))

    def to(self, device) -> "Measurement":
        mask = None if self.mask is None else self.mask.to(device)
        return dataclasses.replace(self, target=self.target.to(device), mask=mask)

    def certificate(self, downscaled: torch.Tensor, index: int = 0) -> dict:
        """How far A(x) (``downscaled``, (C, h, w)) is from target ``index``: the search's MSE over the
        pixels that count, and RMSE and PSNR (dB) per channel."""
        err = (downscaled.double() - self.target[index].double().to(downscaled.device)).square()
        if self.mask is not None:
            w = self.mask[0].double().to(err.device)
            per_channel = (err * w).sum((1, 2)) / w.sum()
        else:
            per_channel = err.mean((1, 2))
        rmse = per_channel.sqrt()
        psnr = [round(float(10 * torch.log10(1 / v)), 3) if v > 0 else None for v in per_channel]
        return {"mse": float(per_channel.mean()), "rmse": [float(v) for v in rmse], "psnr": psnr}
