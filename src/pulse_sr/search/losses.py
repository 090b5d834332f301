"""PULSE's loss terms (Section 3 and supplement Section 2.3).

A loss string such as ``"100*L2+0.05*GEOCROSS"`` names weighted terms.
Every term returns one value per sample, shape (B,), so that K samples of one
input can run as one batch and still be tracked (and judged) separately.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

import torch

from ..errors import SettingsError

if TYPE_CHECKING:
    from ..ops.measurement import Measurement

TERMS = ("L2", "L1", "GEOCROSS")


def parse_loss(loss: str) -> List[Tuple[float, str]]:
    """``"100*L2+0.05*GEOCROSS"`` -> ``[(100.0, "L2"), (0.05, "GEOCROSS")]``."""
    terms = []
    for part in loss.replace(" ", "").split("+"):
        m = re.fullmatch(r"(?:([0-9.eE+-]+)\*)?([A-Za-z0-9]+)", part)
        if not m or m.group(2).upper() not in TERMS:
            raise SettingsError(f"bad loss term {part!r} in {loss!r}; use WEIGHT*TERM joined by '+', "
                             f"with TERM one of {', '.join(TERMS)}")
        try:
            weight = float(m.group(1)) if m.group(1) else 1.0
        except ValueError:
            raise SettingsError(f"bad weight in loss term {part!r}") from None
        if not math.isfinite(weight):
            raise SettingsError(f"bad weight in loss term {part!r}: weights must be finite numbers")
        terms.append((weight, m.group(2).upper()))
    if not any(t in ("L2", "L1") for _, t in terms):
        raise SettingsError(f"loss {loss!r} needs a downscaling term (L2 or L1)")
    return terms


def _mean(err: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return err.mean(dim=(1, 2, 3))
    w = weight.to(err.device, err.dtype)
    return (err * w).sum(dim=(1, 2, 3)) / (w.sum() * err.shape[1])


def l2_per_sample(lr_gen: torch.Tensor, lr_ref: torch.Tensor, weight: Optional[torch.Tensor] = None
                  ) -> torch.Tensor:
    """Mean squared error per sample over (C, H, W): the quantity compared with eps.
    With ``weight`` (1, 1, H, W) of 0/1, the mean over the known pixels only (a mask)."""
    return _mean((lr_gen - lr_ref).square(), weight)


def l1_per_sample(lr_gen: torch.Tensor, lr_ref: torch.Tensor, weight: Optional[torch.Tensor] = None
                  ) -> torch.Tensor:
    return _mean((lr_gen - lr_ref).abs(), weight)


def geocross(latent: torch.Tensor) -> torch.Tensor:
    """Geodesic cross loss of (B, L, D) layer vectors, per sample (supplement Eq. 2).

    As in the reference, the angle is ``2 atan2(|x - y|, |x + y|)``, squared,
    averaged over all L x L pairs, times D / 8. A tiled latent (L = 1) gives 0.
    """
    b, n, d = latent.shape
    if n == 1:
        return latent.new_zeros(b)
    x = latent[:, None, :, :]
    y = latent[:, :, None, :]
    a = ((x - y).square().sum(-1) + 1e-9).sqrt()
    c = ((x + y).square().sum(-1) + 1e-9).sqrt()
    angle = 2 * torch.atan2(a, c)
    return (angle.square() * d).mean(dim=(1, 2)) / 8.0


class PulseLoss:
    """Weighted sum of the terms in a loss string, per sample.

    As in the reference, the downscaling terms are clamped from below at eps:
    once an image is within eps, only the latent regulariser keeps moving it.
    """

    def __init__(self, loss: str, eps: float):
        self.terms = parse_loss(loss)
        self.eps = eps

    def __call__(self, latent: torch.Tensor, lr_gen: torch.Tensor, target: Union["Measurement", torch.Tensor],
                 known: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Per-sample loss of ``lr_gen`` = A(G(latent)) against a :class:`Measurement` (its target and
        mask), or against a bare target tensor with an optional ``known`` mask."""
        if not torch.is_tensor(target):
            target, known = target.target, target.mask
        lr_ref = target
        parts: Dict[str, torch.Tensor] = {"L2": l2_per_sample(lr_gen, lr_ref, known)}
        total = lr_gen.new_zeros(lr_gen.shape[0])
        for weight, name in self.terms:
            if name == "L2":
                value = parts["L2"].clamp(min=self.eps)
            elif name == "L1":
                # The reference scales L1 by 10 so that its weights compare with L2's.
                parts["L1"] = l1_per_sample(lr_gen, lr_ref, known)
                value = 10 * parts["L1"].clamp(min=self.eps)
            else:
                parts["GEOCROSS"] = value = geocross(latent)
            total = total + weight * value
        return total, parts
