"""What every generator PULSE searches shares: shape checks, noise-list checks and truncation.

The contract itself (``num_ws``, ``w_dim``, ``z_dim``, ``resolution``,
``noise_resolutions``, ``w_avg``, ``mapping(z)``, ``make_noise``,
``synthesize(ws, noise)``) is documented in the README's architecture section;
these helpers keep StyleGAN v1, 2 and 3 checking it the same way.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch


def assert_shape(tensor: torch.Tensor, shape: Sequence[Optional[int]], name: str = "tensor") -> None:
    """Raise ValueError unless ``tensor`` has ``shape`` (None matches any size)."""
    if tensor.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, tensor.shape)):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(tensor.shape)}")


def check_noise(noise: Sequence[Optional[torch.Tensor]], resolutions: Sequence[int], batch: int) -> None:
    """One (B or 1, 1, r, r) map or None per noise layer, else ValueError naming the entry."""
    if len(noise) != len(resolutions):
        raise ValueError(f"noise: expected {len(resolutions)} entries (one per noise layer), got {len(noise)}")
    for i, (n, r) in enumerate(zip(noise, resolutions)):
        if n is not None and (n.ndim != 4 or n.shape[1:] != (1, r, r) or n.shape[0] not in (1, batch)):
            raise ValueError(f"noise[{i}]: expected shape (B, 1, {r}, {r}), got {tuple(n.shape)}")


def truncated_ws(G, z: torch.Tensor, psi: float = 1.0, cutoff: Optional[int] = None) -> torch.Tensor:
    """W+ for ``z``: the mapping broadcast to ``G.num_ws`` layers, the first ``cutoff`` (None: all)
    pulled towards ``G.w_avg`` by the truncation trick (``psi`` = 1: unchanged)."""
    ws = G.mapping(z)[:, None, :].repeat(1, G.num_ws, 1)
    if psi != 1.0:
        n = G.num_ws if cutoff is None else cutoff
        ws[:, :n] = torch.lerp(G.w_avg.to(ws.dtype), ws[:, :n], psi)
    return ws


class SingleImplementation:
    """For generators with one implementation (StyleGAN2, StyleGAN3) and a ``mapping_network``:
    ``impl`` / ``set_impl`` accept what StyleGAN1Generator does (so callers need not ask which
    generator they hold), plus ``w_avg`` and ``mapping(z)``."""

    @property
    def impl(self) -> str:
        return "ref"

    def set_impl(self, impl: str):
        from ..ops.epilogue import IMPLS
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; choose from {', '.join(IMPLS)}")
        return self

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping_network.w_avg

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> (B, w_dim), not broadcast to W+."""
        return self.mapping_network(z)
