"""Mosaic detection: is an input an editor's pixelation, and with which block and grid offset?

Used by :func:`pulse_sr.ops.operators.auto_operator` to choose ``box:B@ox,oy``
for an input given without ``--operator``. Measured on 500 UTKFace crops with
random blocks 2-16 and offsets (``benchmarks/mosaic_detector.py``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def _edge_profile(y: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean absolute difference between neighbouring columns (dim=-1) or rows (dim=-2), in 0–255 units."""
    return (y.diff(dim=dim).abs() * 255).mean(dim=(0, -2 if dim == -1 else -1))


# Accepted: mean step inside blocks / mean step at their edges, on both axes. Over UTKFace crops,
# JPEG (q90) mosaics scored up to 0.37 and natural images at least 0.55 at 64 and 200 px, but
# one 16-px image 0.38: small inputs, with few steps to average, need a near-exact mosaic.
MOSAIC_SCORE, MOSAIC_SCORE_SMALL, SMALL = 0.4, 0.2, 48


def _axis_scores(d: torch.Tensor, max_block: int) -> dict:
    """For each block size, the grid offset on one axis whose inside steps are smallest next to its
    edge steps: {block: (offset, score, mean edge step)}; score = mean inner / mean edge step."""
    import numpy as np

    d = d.double().cpu().numpy()
    n = d.size + 1
    pos = np.arange(n - 1)
    out = {}
    for b in range(2, max_block + 1):
        if n < 2 * b:
            break
        best = None
        for o in range(b):
            edge = ((pos + 1 - o) % b) == 0
            if edge.sum() < 1 or (~edge).sum() < 2:
                continue
            mean_edge = float(d[edge].mean())
            score = float(d[~edge].mean()) / max(mean_edge, 1e-9)
            if best is None or score < best[1]:
                best = (o, score, mean_edge)
        if best is not None:
            out[b] = best
    return out


def detect_mosaic(lr: torch.Tensor, max_block: int = 16) -> Optional[Tuple[int, Tuple[int, int]]]:
    """(block, (ox, oy)) when a (3, h, w) input in [0, 1] is a mosaic of square blocks, else None.

    The step between neighbouring columns (and rows), averaged over the image, is
    flat inside blocks and jumps at their edges. Each block size gets the offset
    whose inside steps are smallest next to its edge steps; the true block scores
    lowest (half its size has half of its "edges" flat, twice its size has an
    edge among its "insides"). Exact mosaics tie at 0 with their divisors, and
    the largest block wins. Natural images score about 1.
    """
    sx = _axis_scores(_edge_profile(lr, -1), max_block)
    sy = _axis_scores(_edge_profile(lr, -2), max_block)
    limit = MOSAIC_SCORE if min(lr.shape[-2:]) >= SMALL else MOSAIC_SCORE_SMALL
    cands = [(sx[b][1] + sy[b][1], b) for b in sx if b in sy
             and max(sx[b][1], sy[b][1]) < limit and min(sx[b][2], sy[b][2]) > 0.5]
    if not cands:
        return None
    best = min(score for score, _ in cands)
    b = max(b for score, b in cands if score <= best + 0.02)
    return b, (sx[b][0], sy[b][0])
