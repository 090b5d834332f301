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


# A file's constructor arguments are untrusted: a 1.3 KB file saying fmap_base=2**30 would
# otherwise allocate tens of GB. NVIDIA's 1024-px generator has about 30 M parameters.
MAX_PARAMETERS = 300_000_000


def build_generator(cfg, what: str):
    """A StyleGAN1Generator for ``cfg``, after checking on the meta device (no memory) that it is of sane size."""
    import torch

    from ..networks.stylegan1 import StyleGAN1Generator

    n = _parameter_bound(cfg)
    if n > MAX_PARAMETERS:
        # The bound is loose: count exactly on the meta device (no memory, but its first
        # use imports sympy through torch._refs, about 1.5 s, so only when needed).
        with torch.device("meta"):
            shapes = StyleGAN1Generator(cfg)
        n = sum(t.numel() for t in shapes.state_dict().values())
    check_parameter_count(n, what, "its config")
    return StyleGAN1Generator(cfg)


def check_parameter_count(n: int, what: str, source: str) -> None:
    """ModelFormatError if ``source`` (what the number came from) describes over MAX_PARAMETERS parameters."""
    if n > MAX_PARAMETERS:
        raise ModelFormatError(f"{what}: {source} describes {n / 1e6:.0f} M parameters "
                               f"({n * 4 / 2 ** 30:.1f} GiB), over the {MAX_PARAMETERS / 1e6:.0f} M limit; "
                               f"refusing to build it")


def _parameter_bound(cfg) -> int:
    """An upper bound on the tensors a StyleGAN1 config allocates, from its numbers alone."""
    width = max(cfg.latent_dim, cfg.mapping_fmaps, cfg.w_dim)
    fmaps = max(1, min(cfg.fmap_max, cfg.fmap_base))
    mapping = cfg.mapping_layers * (width * width + width)
    # Per layer: a 4×4 (fused) or 3×3 conv, the style affine, noise strength, bias, a noise map.
    layer = 16 * fmaps * fmaps + 2 * cfg.w_dim * fmaps + 4 * fmaps + cfg.resolution ** 2
    to_rgb = cfg.resolution_log2 * (cfg.num_channels * fmaps + cfg.num_channels)
    return mapping + cfg.num_ws * layer + to_rgb + 16 * fmaps


def count_indexed(names, template: str) -> int:
    """How many of ``template.format(0)``, ``template.format(1)``, ... are in ``names``, in a row."""
    n = 0
    while template.format(n) in names:
        n += 1
    return n
