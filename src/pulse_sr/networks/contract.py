"""What every generator PULSE searches shares: shape checks, noise-list checks and truncation.

The contract itself is :class:`pulse_sr.networks.base.Generator`, documented in
its module; these helpers keep StyleGAN v1, 2 and 3 checking it the same way.
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
