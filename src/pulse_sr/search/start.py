"""The starting state of a search: Gaussian latents and noise maps, one seed per sample.

Both the paper loop (:mod:`.loop`) and the adaptive search (:mod:`.adaptive`) start here,
so a seed names the same starting point whichever search runs it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .options import PulseOptions


def initial_state(G, opts: PulseOptions, seeds: List[int], bad: set, device, trainable: Optional[set] = None
                  ) -> Tuple[torch.Tensor, List[Optional[torch.Tensor]], List[torch.Tensor]]:
    """Gaussian latents and noise maps, one seed per sample: (latent, noise per layer, trainable noise).

    ``trainable`` names the noise layers that get gradients (default: the paper's first
    ``trainable_noise_layers`` with ``--noise trainable``)."""
    if trainable is None:
        trainable = set(range(opts.trainable_noise_layers)) if opts.noise == "trainable" else set()
    trains = set(trainable)
    res = G.noise_resolutions
    # Each sample draws its latent, then its noise maps, from its own seed, so a
    # sample is the same whether it runs alone or in a batch.
    lat_rows, noise_rows = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        lat_rows.append(torch.randn(1 if opts.tile_latent else G.num_ws, G.w_dim, generator=g))
        noise_rows.append([torch.randn(1, r, r, generator=g) for r in res])
    latent = torch.stack(lat_rows).to(device).requires_grad_(True)
    noise: List[Optional[torch.Tensor]] = []
    trained: List[torch.Tensor] = []
    for i in range(len(res)):
        if opts.noise == "zero" or i in bad:
            noise.append(None)  # the same as a zero map, without a full-size pass
            continue
        n = torch.stack([row[i] for row in noise_rows]).to(device)
        if i in trains:
            n.requires_grad_(True)
            trained.append(n)
        noise.append(n)
    return latent, noise, trained
