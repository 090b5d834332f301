"""The layout every StyleGAN2 converter here produces: NVIDIA's torch generator.

NVIDIA's ``training.networks_stylegan2.Generator`` (stylegan2-ada-pytorch,
stylegan3) is the common target: a converter returns its constructor keywords
(``init_kwargs``, as an NVIDIA pickle records them) and a state dict under its
names (``mapping.fc0.weight``, ``synthesis.b64.conv0.affine.bias``, ...).
This module knows that layout from the keywords alone: the names and shapes to
expect, the channel counts per block, and the FIR filter buffers, so that a
converter can check its result completely before any network is built.

Sizes always come from tensor shapes, never from numbers a file states; the
bounds below keep a hostile or corrupt file from describing something absurd.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import ModelFormatError
from ..networks.fir import setup_filter as filter_buffer  # NVIDIA's stored form of a FIR filter
from .common import check_keys

__all__ = ["MAX_DIM", "MAX_MAPPING_LAYERS", "DEFAULT_FILTER", "ARCHITECTURES", "check_dim", "check_resolution",
           "fit_channel_base", "generator_kwargs", "block_channels", "expected_shapes", "filter_buffer",
           "filter_buffers",
           "finish_state"]

MAX_DIM = 4096             # Largest latent width or channel count accepted (NVIDIA's largest: 512/1024).
MAX_MAPPING_LAYERS = 32    # NVIDIA's default is 8.
MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024
DEFAULT_FILTER = (1, 3, 3, 1)
ARCHITECTURES = ("skip", "orig", "resnet")

# The (channel_base, channel_max) pairs of NVIDIA's released generators, tried
# before any pair derived from the shapes (config-f and config-e / paper256).
_CONVENTIONAL_BASES = ((32768, 512), (16384, 512))


def check_dim(what: str, label: str, n: int, where: str) -> int:
    """``n`` as an int in [1, MAX_DIM]; ``where`` says which tensor it was read from."""
    n = int(n)
    if not 1 <= n <= MAX_DIM:
        raise ModelFormatError(f"{what}: {label} is {n} (from {where}); expected 1 to {MAX_DIM}")
    return n


def check_resolution(what: str, resolution: int, where: str) -> int:
    """``resolution`` if it is a power of two in [4, 1024]."""
    r = int(resolution)
    if not (MIN_RESOLUTION <= r <= MAX_RESOLUTION and r & (r - 1) == 0):
        raise ModelFormatError(f"{what}: resolution {r} (from {where}) is not a power of two "
                               f"in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]")
    return r


def fit_channel_base(channels: Mapping[int, int],
                     hints: Iterable[Tuple[int, int]] = ()) -> Optional[Tuple[int, int]]:
    """``(channel_base, channel_max)`` with ``min(channel_base // res, channel_max) == channels[res]``, or None.

    ``hints`` (from the file's own keywords) are tried first, then NVIDIA's usual
    pairs, then pairs derived from the counts. Since the counts can only fall
    with resolution, channel_max must be the count at 4 px, and channel_base is
    ``count * res`` at some resolution below that cap (or, when every block sits
    at the cap, ``cap * largest resolution``).
    """
    if not channels:
        return None
    top = channels[min(channels)]

    def fits(base, cmax) -> bool:
        return all(min(base // res, cmax) == c for res, c in channels.items())

    candidates = [tuple(h) for h in hints] + list(_CONVENTIONAL_BASES)
    candidates += [(c * res, top) for res, c in sorted(channels.items()) if c < top]
    candidates.append((top * max(channels), top))
    for base, cmax in candidates:
        try:
            base, cmax = int(base), int(cmax)
        except (TypeError, ValueError):
            continue
        if base > 0 and cmax > 0 and fits(base, cmax):
            return base, cmax
    return None


def generator_kwargs(*, z_dim: int, w_dim: int, resolution: int, img_channels: int, channels: Mapping[int, int],
                     mapping_layers: int, lr_multiplier: float, layer_features: Optional[int] = None,
                     architecture: str = "skip", resample_filter: Sequence[float] = DEFAULT_FILTER,
                     conv_clamp: Optional[float] = None, hints: Iterable[Tuple[int, int]] = ()) -> dict:
    """NVIDIA ``Generator`` keywords for the sizes a converter read from the shapes.

    The channels per block are given as ``channel_base``/``channel_max`` when some
    pair reproduces them, else as an explicit ``channels`` {resolution: count}
    (an extension of NVIDIA's keywords that pulse-sr's network accepts).
    """
    mapping = {"num_layers": int(mapping_layers), "lr_multiplier": float(lr_multiplier)}
    if layer_features is not None and mapping_layers > 1 and int(layer_features) != int(w_dim):
        mapping["layer_features"] = int(layer_features)
    synthesis: dict = {}
    fit = fit_channel_base(channels, hints)
    if fit is not None:
        synthesis["channel_base"], synthesis["channel_max"] = fit
    else:
        synthesis["channels"] = {int(r): int(c) for r, c in sorted(channels.items())}
    synthesis.update({"num_fp16_res": 0, "conv_clamp": conv_clamp, "architecture": architecture,
                      "resample_filter": [_plain_number(t) for t in resample_filter]})
    return {"z_dim": int(z_dim), "c_dim": 0, "w_dim": int(w_dim), "img_resolution": int(resolution),
            "img_channels": int(img_channels), "mapping_kwargs": mapping, "synthesis_kwargs": synthesis}


def _plain_number(t):
    t = float(t)
    return int(t) if t.is_integer() else t


def _block_resolutions(resolution: int):
    return [2 ** k for k in range(2, int(math.log2(resolution)) + 1)]


def block_channels(init_kwargs: Mapping) -> Dict[int, int]:
    """Channels of each synthesis block, {resolution: count}, as NVIDIA's network computes them."""
    syn = init_kwargs["synthesis_kwargs"]
    res = _block_resolutions(init_kwargs["img_resolution"])
    if syn.get("channels") is not None:
        return {r: int(syn["channels"][r]) for r in res}
    return {r: min(int(syn["channel_base"]) // r, int(syn["channel_max"])) for r in res}


def filter_buffers(init_kwargs: Mapping) -> Dict[str, torch.Tensor]:
    """Every ``resample_filter`` buffer of NVIDIA's ``Generator(**init_kwargs)``, with its value.

    Blocks, their upsampling conv0 and resnet skips hold the configured filter;
    each block's conv1 (which never resamples) is built with NVIDIA's default
    [1, 3, 3, 1] whatever the configuration says, and so is its buffer.
    """
    taps = init_kwargs["synthesis_kwargs"].get("resample_filter", DEFAULT_FILTER)
    configured, default = filter_buffer(taps), filter_buffer(DEFAULT_FILTER)
    arch = init_kwargs["synthesis_kwargs"].get("architecture", "skip")
    out = {}
    for res in _block_resolutions(int(init_kwargs["img_resolution"])):
        block = f"synthesis.b{res}"
        out[f"{block}.resample_filter"] = configured
        if res > 4:
            out[f"{block}.conv0.resample_filter"] = configured
            if arch == "resnet":
                out[f"{block}.skip.resample_filter"] = configured
        out[f"{block}.conv1.resample_filter"] = default
    return out


def expected_shapes(init_kwargs: Mapping) -> Dict[str, Tuple[int, ...]]:
    """Every name in NVIDIA's ``Generator(**init_kwargs).state_dict()``, with its shape.

    Covers what the converters produce: no labels (c_dim 0), noise inputs on,
    3x3 synthesis convolutions.
    """
    z_dim, w_dim = int(init_kwargs["z_dim"]), int(init_kwargs["w_dim"])
    resolution, img_channels = int(init_kwargs["img_resolution"]), int(init_kwargs["img_channels"])
    mapping = init_kwargs["mapping_kwargs"]
    arch = init_kwargs["synthesis_kwargs"].get("architecture", "skip")
    n_layers = int(mapping["num_layers"])
    hidden = int(mapping.get("layer_features") or w_dim)
    feats = [z_dim] + [hidden] * (n_layers - 1) + [w_dim]

    shapes: Dict[str, Tuple[int, ...]] = {"mapping.w_avg": (w_dim,)}
    for i in range(n_layers):
        shapes[f"mapping.fc{i}.weight"] = (feats[i + 1], feats[i])
        shapes[f"mapping.fc{i}.bias"] = (feats[i + 1],)
    shapes.update({name: tuple(f.shape) for name, f in filter_buffers(init_kwargs).items()})

    channels = block_channels(init_kwargs)
    for res in _block_resolutions(resolution):
        block, cout = f"synthesis.b{res}", channels[res]
        if res == 4:
            shapes[f"{block}.const"] = (cout, 4, 4)
            layers = [("conv1", cout)]
        else:
            cin = channels[res // 2]
            layers = [("conv0", cin), ("conv1", cout)]
            if arch == "resnet":
                shapes[f"{block}.skip.weight"] = (cout, cin, 1, 1)
        for name, cin in layers:
            layer = f"{block}.{name}"
            shapes.update({
                f"{layer}.weight": (cout, cin, 3, 3), f"{layer}.bias": (cout,),
                f"{layer}.affine.weight": (cin, w_dim), f"{layer}.affine.bias": (cin,),
                f"{layer}.noise_const": (res, res), f"{layer}.noise_strength": ()})
        if arch == "skip" or res == resolution:
            shapes.update({
                f"{block}.torgb.weight": (img_channels, cout, 1, 1), f"{block}.torgb.bias": (img_channels,),
                f"{block}.torgb.affine.weight": (cout, w_dim), f"{block}.torgb.affine.bias": (cout,)})
    return shapes


def finish_state(what: str, state: Dict[str, torch.Tensor], init_kwargs: Mapping, against: str,
                 sources: Optional[Mapping[str, str]] = None) -> Dict[str, torch.Tensor]:
    """Add the filter buffers, then check ``state`` is exactly NVIDIA's names and shapes for ``init_kwargs``.

    ``sources`` maps an NVIDIA name to the file's name it came from, so that a
    shape error names what the user can find in the file. Returns float32,
    contiguous tensors; NaN or infinite values are an error.
    """
    want = expected_shapes(init_kwargs)
    state = dict(state)
    for name, f in filter_buffers(init_kwargs).items():
        state.setdefault(name, f.clone())
    check_keys(what, state, want, against=against, noun="converted names", limit=8)
    bad = [(k, tuple(state[k].shape), want[k]) for k in sorted(state) if tuple(state[k].shape) != want[k]]
    if bad:
        sources = sources or {}
        listed = "; ".join(f"{sources.get(k, k)}: {have} in NVIDIA layout, expected {need} for {k}"
                           for k, have, need in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ModelFormatError(f"{what}: does not match {against}: shape mismatch {listed}{more}")
    out = {}
    for k, t in state.items():
        t = t.detach().to(torch.float32).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise ModelFormatError(f"{what}: NaN or infinite values in {sources.get(k, k) if sources else k}; "
                                   f"the weights are corrupt")
        out[k] = t
    return out
