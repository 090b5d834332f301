"""From what a caller gives to an operator: a spec string, nothing (the default for the input's size,
or one detected from its pixels), an Operator, or a callable."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ..mosaic import detect_mosaic
from .base import Compose, MaskReader, Operator, SpecContext, compose, parse_term, split_terms
from .custom import Custom
from .gray import Gray
from .resampling import Box, default_resampling


def is_gray(lr: torch.Tensor, tol: float = 1 / 255) -> bool:
    """True when the three channels of a (3, h, w) input are equal (a grayscale photo saved as RGB)."""
    return bool((lr.max(0).values - lr.min(0).values).max() <= tol)


def auto_operator(lr: torch.Tensor, resolution: int) -> Compose:
    """The operator for an input with no ``--operator``: a detected mosaic gets ``box``, else
    ``bicubic`` or ``resize``; ``gray`` joins when the input is grayscale."""
    h, w = lr.shape[-2:]
    ops: List[Operator] = []
    mosaic = detect_mosaic(lr)
    if mosaic is not None:
        ops.append(Box(mosaic[0], mosaic[1], (h, w)))
    else:
        ops.append(default_resampling(h, w, resolution))
    if is_gray(lr):
        ops.append(Gray())
    return Compose(ops)


def parse_operator(spec: str, lr_size: Tuple[int, int], resolution: int, *,
                   read_mask: Optional[MaskReader] = None) -> Compose:
    """A spec such as ``gray+box:8@3,5`` for an input of (h, w) = ``lr_size`` on a ``resolution``-px model.

    ``read_mask(path)`` gives the pixels of a ``mask:PATH`` term (default:
    :func:`pulse_sr.images.read_mask`).
    """
    ctx = SpecContext(tuple(lr_size), int(resolution), read_mask)
    return compose([parse_term(t, ctx) for t in split_terms(spec)], ctx, default_resampling)


def as_operator(op, lr_size: Tuple[int, int], resolution: int) -> Compose:
    """None (the default for the size), a spec string, an Operator, or any callable ``f(hr) -> lr``."""
    if op is None:
        return Compose([default_resampling(*lr_size, resolution)])
    if isinstance(op, str):
        return parse_operator(op, lr_size, resolution)
    if isinstance(op, Compose):
        return op
    if isinstance(op, Operator):
        return Compose([op])
    if callable(op):
        return Compose([Custom(op)])
    raise TypeError(f"operator must be a spec string, an Operator or a callable, got {type(op).__name__}")
