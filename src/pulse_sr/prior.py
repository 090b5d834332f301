"""Gaussian fit of the mapping network's push-forward (supplement Section 2.4).

StyleGAN's mapping network ends in a leaky ReLU (slope 0.2). Undoing it
(multiplying negatives by 5) leaves a distribution that a per-dimension
Gaussian fits well, so the search optimises a latent x on the sphere and
feeds the synthesis ``lrelu(x * std + mean)``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .errors import ModelFormatError

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
    return {"mean": mean.float(), "std": std.float()}


def gaussian_fit_for(G, cache: Optional[Path] = None, num_samples: int = 1_000_000,
                     progress: Optional[Callable[[int, int], None]] = None) -> GaussianFit:
    """The generator's fit: the one it carries, else a cached one, else computed and cached.

    The cache key is the hash of the mapping weights, so a changed model never
    reuses a stale fit.
    """
    fit = getattr(G, "gaussian_fit", None)
    if fit is not None:
        return validate_fit(fit, G.w_dim)
    if not getattr(G, "has_mapping", True):
        raise ModelFormatError("this generator has no mapping network, so its Gaussian fit cannot be "
                               "computed: pass the mapping weights (--mapping mapping.pt) or a "
                               "gaussian_fit.pt (--gaussian-fit)")
    path = None
    if cache is not None:
        path = Path(cache) / f"gaussian_fit-{mapping_hash(G)[:24]}-{num_samples}.pt"
        if path.exists():
            try:
                fit = validate_fit(torch.load(path, map_location="cpu", weights_only=True), G.w_dim, str(path))
                G.gaussian_fit = fit
                return fit
            except Exception:
                path.unlink(missing_ok=True)  # a corrupt cache entry is recomputed
    fit = compute_gaussian_fit(G, num_samples, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(fit, tmp)
        tmp.replace(path)
    G.gaussian_fit = fit
    return fit


def latent_to_w(latent: torch.Tensor, fit: GaussianFit) -> torch.Tensor:
    """The fitted affine map plus leaky ReLU: sphere latent -> W-space vector."""
    return F.leaky_relu(latent * fit["std"] + fit["mean"], 0.2)
