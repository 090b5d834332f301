"""Which operator an input gets when none is named: from its size and its pixels."""

from __future__ import annotations

from typing import List, Tuple

import torch

from ..mosaic import detect_mosaic
from .base import Compose, Operator
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


def as_operator(op, lr_size: Tuple[int, int], resolution: int) -> Compose:
    """None (the default for the size), a spec string, an Operator, or any callable ``f(hr) -> lr``."""
    from . import parse_operator

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
