"""The spaces the adaptive search may widen into when W+ is too small, one object per stage.

A sample starts in :class:`LatentStage` (PULSE's space: W+ on the sphere, with the
first noise maps trainable as ``--noise`` says) and, when it plateaus above eps,
moves to the next stage of its plan (:class:`~.plan.Continuation` decides):

* :class:`NoiseStage` -- every noise map that is not forced to zero becomes
  trainable, each still on its sphere (StyleGAN3 has no noise inputs: skipped);
* :class:`FeatureStage` -- in the spirit of ILO (Daras et al., ICML 2021), the
  activations after one synthesis stage are optimised too, as the generator's
  own plus an offset kept inside a small l1 ball (``radius`` times their own l1
  norm), so the answer stays near what the generator makes.

Each stage is cumulative (it keeps what the stages before it train) and says
only which noise maps it trains and which features it frees; the loop owns
the tensors. A result records the stage it was found in, so a user sees how far
from the generator's manifold it went.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Set

import torch

from .options import PulseOptions


def paper_noise_layers(opts: PulseOptions, count: int, bad: Set[int]) -> Set[int]:
    """The noise maps PULSE trains: the first ``trainable_noise_layers`` with ``--noise trainable``."""
    if opts.noise != "trainable":
        return set()
    return {i for i in range(min(count, opts.trainable_noise_layers)) if i not in bad}


@dataclasses.dataclass(frozen=True)
class LatentStage:
    """W+ on the sphere, as in the paper."""

    name = "w+"

    def available(self, G, opts: PulseOptions) -> bool:
        return True

    def noise_layers(self, opts: PulseOptions, count: int, bad: Set[int]) -> Set[int]:
        return paper_noise_layers(opts, count, bad)

    def feature_stage(self, G) -> Optional[int]:
        return None


@dataclasses.dataclass(frozen=True)
class NoiseStage(LatentStage):
    """W+ and every noise map not forced to zero (from its fixed or trained start, on its sphere)."""

    name = "noise"

    def available(self, G, opts: PulseOptions) -> bool:
        return bool(G.noise_resolutions) and opts.noise != "zero"  # zero maps have a zero sphere

    def noise_layers(self, opts: PulseOptions, count: int, bad: Set[int]) -> Set[int]:
        if opts.noise == "zero":  # no maps to train (and a zero map's sphere is a point)
            return set()
        return {i for i in range(count) if i not in bad}


@dataclasses.dataclass(frozen=True)
class FeatureStage(NoiseStage):
    """All of the above plus the activations after synthesis stage ``stage`` (None: the last stage at
    or below ``resolution`` px, default a quarter of the model's), within ``radius`` (relative l1)."""

    name = "features"
    radius: float = 0.1
    stage: Optional[int] = None
    resolution: Optional[int] = None

    def available(self, G, opts: PulseOptions) -> bool:
        return getattr(G, "num_stages", 0) > 1

    def feature_stage(self, G) -> int:
        if self.stage is not None:
            return max(1, min(int(self.stage), G.num_stages - 1))
        target = self.resolution or max(4, G.resolution // 4)
        fitting = [k for k in range(1, G.num_stages) if G.stage_resolution(k) <= target]
        return fitting[-1] if fitting else 1


def default_stages(expand: bool) -> tuple:
    """The stages a plan walks through: W+ only, or W+ -> noise -> features with expansion on."""
    return (LatentStage(), NoiseStage(), FeatureStage()) if expand else (LatentStage(),)


def usable_stages(stages: Sequence[LatentStage], G, opts: PulseOptions) -> tuple:
    """The stages that mean something for ``G`` and ``opts`` (StyleGAN3: no noise stage)."""
    return tuple(s for s in stages if s.available(G, opts))


@torch.no_grad()
def project_l1_(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """In place: each row of ``delta`` (B, ...) onto the l1 ball of its ``radius`` (B,) (Duchi et al. 2008)."""
    b = delta.shape[0]
    v = delta.reshape(b, -1)
    a = v.abs()
    inside = a.sum(1) <= radius
    if bool(inside.all()):
        return delta
    u = a.sort(dim=1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=u.dtype)
    cond = u - (css - radius[:, None]) / j > 0
    rho = cond.to(torch.long).cumsum(1).argmax(1)  # the last index where cond holds (cond is a prefix)
    theta = ((css.gather(1, rho[:, None]).squeeze(1) - radius) / (rho + 1).to(u.dtype)).clamp(min=0)
    theta = torch.where(inside, torch.zeros_like(theta), theta)
    v.copy_(v.sign() * (a - theta[:, None]).clamp(min=0))
    return delta
