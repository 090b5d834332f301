"""Inferring a StyleGAN v1 architecture from the tensor shapes a file holds.

Shared by the official TF pickle and PULSE's state dicts, which both record
per-stage channel counts but not the ``fmap_*`` constants that produce them.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

from ..errors import ModelFormatError


def resolution_and_channels(blocks, const_channels, conv1_channels, what: str) -> Tuple[int, Dict[int, int]]:
    """Resolution from the block sizes found, and feature maps per stage.

    ``const_channels()`` reads the 4x4 constant's channels and
    ``conv1_channels(r)`` the output channels of block r's second conv.
    """
    resolution = max(blocks)
    log2 = int(round(math.log2(resolution)))
    if resolution != 2 ** log2 or not 8 <= resolution <= 1024:
        raise ModelFormatError(f"{what}: resolution {resolution} is not a power of two in [8, 1024]")
    channels = {1: const_channels()}
    for s in range(2, log2):
        channels[s] = conv1_channels(2 ** (s + 1))
    return resolution, channels


def fit_fmaps(channels: Dict[int, int], hint: Tuple[float, float, int], what: str) -> Tuple[int, float, int]:
    """Find (fmap_base, fmap_decay, fmap_max) such that ``nf(stage)`` gives ``channels``.

    ``hint`` (from the pickle's static kwargs, or the defaults) is tried first.
    """
    def reproduces(base, decay, fmax):
        return all(min(int(base / (2.0 ** (s * decay))), fmax) == c for s, c in channels.items())

    fmax = max(channels.values())
    last = max(channels)
    candidates = [hint]
    candidates += [(c * 2 ** s, 1.0, fmax) for s, c in sorted(channels.items())]
    candidates += [(fmax * 2 ** last, 1.0, fmax), (fmax, 0.0, fmax)]
    for base, decay, top in candidates:
        if reproduces(base, decay, top):
            return int(base), float(decay), int(top)
    raise ModelFormatError(f"{what}: channel counts per stage {dict(sorted(channels.items()))} "
                           f"do not follow min(fmap_base / 2**(stage * fmap_decay), fmap_max)")
