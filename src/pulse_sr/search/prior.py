"""Gaussian fit of the mapping network's push-forward (supplement Section 2.4).

StyleGAN's mapping network ends in a leaky ReLU (slope 0.2). Undoing it
(multiplying negatives by 5) leaves a distribution that a per-dimension
Gaussian fits well, so the search optimises a latent x on the sphere and
feeds the synthesis ``lrelu(x * std + mean)``.

Only the maths lives here: :class:`GaussianPrior` and how it is computed.
Where a fit comes from (the model file, the disk cache, or a fresh
computation on the run's device) is :func:`pulse_sr.load_model`'s business.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F

from ..errors import ModelFormatError


@dataclasses.dataclass(frozen=True)
class GaussianPrior:
    """The Gaussian fit of leaky_relu(W, 5): per-dimension ``mean`` and ``std``, both (w_dim,).

    ``prior.latent_to_w(x)`` maps a latent on the sphere into W (Sec. 3.3 of the
    paper); ``prior.to(device)`` moves it. ``prior["mean"]`` reads like PULSE's
    own ``gaussian_fit.pt`` dict.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @property
    def w_dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to(self, device) -> "GaussianPrior":
        return GaussianPrior(self.mean.to(device), self.std.to(device))

    def latent_to_w(self, latent: torch.Tensor) -> torch.Tensor:
        """The fitted affine map plus leaky ReLU: sphere latent (..., w_dim) -> W-space vector."""
        return F.leaky_relu(latent * self.std + self.mean, 0.2)

    def to_dict(self) -> Dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in ("mean", "std"):
            raise KeyError(key)
        return getattr(self, key)

    def keys(self):
        return ("mean", "std")

    @classmethod
    def of(cls, fit: Union["GaussianPrior", Mapping[str, torch.Tensor]], w_dim: int,
           what: str = "gaussian fit") -> "GaussianPrior":
        """A checked prior from a GaussianPrior or a ``{'mean', 'std'}`` mapping of (w_dim,) tensors."""
        if isinstance(fit, GaussianPrior):
            mean, std = fit.mean, fit.std
        elif isinstance(fit, Mapping) and "mean" in fit and "std" in fit:
            mean, std = fit["mean"], fit["std"]
        else:
            raise ModelFormatError(f"{what}: expected a Gaussian fit with 'mean' and 'std'")
        if not (torch.is_tensor(mean) and torch.is_tensor(std)) or mean.shape != (w_dim,) or std.shape != (w_dim,):
            raise ModelFormatError(f"{what}: 'mean' and 'std' must be tensors of shape ({w_dim},)")
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std >= 0).all())):
            raise ModelFormatError(f"{what}: NaN, infinite or negative values; the Gaussian fit is corrupt")
        return cls(mean.float(), std.float())


# Kept for callers of the earlier dict form: {'mean': (w_dim,), 'std': (w_dim,)}.
GaussianFit = GaussianPrior


def mapping_hash(G) -> str:
    """sha256 over the mapping network's parameters (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, p in sorted(G.mapping_network.state_dict().items()):
        t = p.detach().cpu().contiguous().float()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def compute_gaussian_fit(G, num_samples: int = 1_000_000, chunk: int = 50_000, seed: int = 0,
                         device=None, progress: Optional[Callable[[int, int], None]] = None) -> GaussianPrior:
    """Sample the mapping on ``num_samples`` Gaussian inputs, in chunks, and fit mean/std.

    The mapping runs on ``device`` (default: where ``G``'s weights are, so a model
    loaded onto a GPU computes its fit there); the inputs are drawn on the CPU from
    one seeded generator, so the fit does not depend on the device beyond float
    rounding. Sums are accumulated in float64, so memory is bounded by one chunk.
    """
    device = torch.device(device) if device is not None else next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    s1 = torch.zeros(G.w_dim, dtype=torch.float64)
    s2 = torch.zeros(G.w_dim, dtype=torch.float64)
    done = 0
    while done < num_samples:
        n = min(chunk, num_samples - done)
        z = torch.randn(n, G.z_dim, generator=gen).to(device)
        # Invert the final leaky ReLU (slope 0.2): negatives times 5.
        w = F.leaky_relu(G.mapping(z), 5.0).double().cpu()
        s1 += w.sum(0)
        s2 += w.square().sum(0)
        done += n
        if progress is not None:
            progress(done, num_samples)
    mean = s1 / done
    var = (s2 - done * mean.square()) / max(done - 1, 1)
    return GaussianPrior(mean.float().to(device), var.clamp(min=0).sqrt().float().to(device))


def validate_fit(fit, w_dim: int, what: str = "gaussian fit") -> GaussianPrior:
    """:meth:`GaussianPrior.of`: a checked prior from a prior or a ``{'mean', 'std'}`` mapping."""
    return GaussianPrior.of(fit, w_dim, what)


def latent_to_w(latent: torch.Tensor, fit) -> torch.Tensor:
    """The fitted affine map plus leaky ReLU: sphere latent -> W-space vector (see :class:`GaussianPrior`)."""
    if isinstance(fit, GaussianPrior):
        return fit.latent_to_w(latent)
    return F.leaky_relu(latent * fit["std"] + fit["mean"], 0.2)
