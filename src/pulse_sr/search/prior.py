"""Gaussian fit of the mapping network's push-forward (supplement Section 2.4).

StyleGAN's mapping network ends in a leaky ReLU (slope 0.2). Undoing it
(multiplying negatives by 5) leaves a distribution that a per-dimension
Gaussian fits well, so the search optimises a latent x on the sphere and
feeds the synthesis ``lrelu(x * std + mean)``.

Only the maths lives here; where a fit comes from (the model file, the disk
cache, or a fresh computation) is :func:`pulse_sr.load_model`'s business.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from ..errors import ModelFormatError

GaussianFit = Dict[str, torch.Tensor]


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
                         device=None, progress: Optional[Callable[[int, int], None]] = None) -> GaussianFit:
    """Sample the mapping on ``num_samples`` Gaussian inputs, in chunks, and fit mean/std.

    Sums are accumulated in float64, so memory is bounded by one chunk.
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
    return {"mean": mean.float(), "std": var.clamp(min=0).sqrt().float()}


def validate_fit(fit: GaussianFit, w_dim: int, what: str = "gaussian fit") -> GaussianFit:
    if not isinstance(fit, dict) or "mean" not in fit or "std" not in fit:
        raise ModelFormatError(f"{what}: expected a dict with 'mean' and 'std'")
    mean, std = fit["mean"], fit["std"]
    if not (torch.is_tensor(mean) and torch.is_tensor(std)) or mean.shape != (w_dim,) or std.shape != (w_dim,):
        raise ModelFormatError(f"{what}: 'mean' and 'std' must be tensors of shape ({w_dim},)")
    if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all()) and bool((std >= 0).all())):
        raise ModelFormatError(f"{what}: NaN, infinite or negative values; the Gaussian fit is corrupt")
    return {"mean": mean.float(), "std": std.float()}


def latent_to_w(latent: torch.Tensor, fit: GaussianFit) -> torch.Tensor:
    """The fitted affine map plus leaky ReLU: sphere latent -> W-space vector."""
    return F.leaky_relu(latent * fit["std"] + fit["mean"], 0.2)
