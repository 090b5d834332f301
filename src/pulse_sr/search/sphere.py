"""Projection onto spheres, the constraint of PULSE's latent search (Section 3.3).

Every vector (the trailing dimensions from dim 2 on, i.e. one 512-d latent
per layer or one noise map) is kept on the sphere of the radius it started
with, so a Gaussian start on sqrt(d) S^(d-1) stays there.
"""

from __future__ import annotations

import torch


def vector_norms(x: torch.Tensor) -> torch.Tensor:
    """Norms over dims 2.. of a (B, L, ...) tensor, keepdim; eps keeps zero vectors finite."""
    dims = tuple(range(2, x.ndim))
    return (x.square().sum(dim=dims, keepdim=True) + 1e-9).sqrt()


@torch.no_grad()
def project_(x: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """In place: rescale each vector of ``x`` to ``radius`` (as returned by :func:`vector_norms`)."""
    return x.div_(vector_norms(x)).mul_(radius)
