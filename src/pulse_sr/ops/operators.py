"""Forward operators: what turns a generated HR face into the measurement the user has.

PULSE's promise is that its output, put through the forward operator A, gives
the input back within ε. The paper's A is the exact bicubic downscale by an
integer factor; real inputs are often something else. Each operator here is a
differentiable map ``A(hr) -> lr`` on (B, 3, R, R) tensors in [0, 1], with a
``describe()`` that goes into the report, and they compose:

* ``bicubic:F``  the paper's exact downscale by F (the default when the LR size divides R);
* ``resize:HxW`` antialiased bicubic resampling to any size up to R (non-square too);
* ``box:B@ox,oy`` block means on a grid whose boundaries fall at x ≡ ox, y ≡ oy (mod B),
  partial border blocks included: editor pixelation. The HR frame is first
  area-resized to the input's own size, unless they are equal;
* ``nearest:F@p`` one pixel per F×F cell, at phase p (or ``@px,py``);
* ``blur:gauss:σ`` / ``blur:motion:len,angle`` a blur of the HR face before the resampling;
* ``gray``       BT.601 luma, replicated to three channels;
* ``mask:PATH``  only the pixels where the mask (at the LR size) is white count.

A spec joins terms with ``+`` (``gray+box:8@3,5``). Whatever the order written,
they apply as blur → resampling → gray → mask; a spec without a resampling term
gets the default one for the input's size (:func:`default_resampling`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputSizeError, PulseError
from .resample import bicubic_downscale, downscale_factor

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


class OperatorSpecError(PulseError, ValueError):
    """An ``--operator`` spec that does not parse, or does not fit the input or the model."""


class Operator:
    """A differentiable forward operator; ``weight`` (1, 1, h, w) marks the pixels that count, or None."""

    name = "operator"
    weight: Optional[torch.Tensor] = None

    def __call__(self, hr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


@dataclass
class Bicubic(Operator):
    factor: int
    name = "bicubic"

    def __call__(self, hr):
        return bicubic_downscale(hr, self.factor)

    def describe(self):
        return {"name": "bicubic", "factor": self.factor}


@dataclass
class Resize(Operator):
    """Antialiased bicubic resampling (a = −0.5, PIL's filter support widened by the scale)."""

    size: Tuple[int, int]  # (h, w)
    name = "resize"

    def __call__(self, hr):
        return F.interpolate(hr, size=tuple(self.size), mode="bicubic", antialias=True, align_corners=False)

    def describe(self):
        return {"name": "resize", "size": list(self.size)}


def _block_matrix(n: int, block: int, offset: int, dtype=torch.float32) -> torch.Tensor:
    """(n, n) matrix averaging each run of pixels between boundaries at i ≡ offset (mod block)."""
    ids = torch.div(torch.arange(n) - offset % block + block, block, rounding_mode="floor")
    same = (ids[:, None] == ids[None, :]).to(dtype)
    return same / same.sum(1, keepdim=True)


@dataclass
class Box(Operator):
    """Block means (pixelation) at the input's own size ``size`` = (h, w)."""

    block: int
    offset: Tuple[int, int]  # (ox, oy)
    size: Tuple[int, int]    # (h, w) of the input
    name = "box"

    def __call__(self, hr):
        h, w = self.size
        x = hr if hr.shape[-2:] == (h, w) else F.interpolate(hr, size=(h, w), mode="area")
        my = _block_matrix(h, self.block, self.offset[1], x.dtype).to(x.device)
        mx = _block_matrix(w, self.block, self.offset[0], x.dtype).to(x.device)
        return my @ x @ mx.T

    def describe(self):
        return {"name": "box", "block": self.block, "offset": list(self.offset), "size": list(self.size)}


@dataclass
class Nearest(Operator):
    factor: int
    phase: Tuple[int, int] = (0, 0)  # (px, py)
    name = "nearest"

    def __call__(self, hr):
        f, (px, py) = self.factor, self.phase
        n = hr.shape[-1] // f
        return hr[..., py::f, px::f][..., :n, :n]

    def describe(self):
        return {"name": "nearest", "factor": self.factor, "phase": list(self.phase)}


def _gauss_kernel(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k2 = k[:, None] * k[None, :]
    return (k2 / k2.sum()).float()


def _motion_kernel(length: float, angle: float) -> torch.Tensor:
    """A line of ``length`` pixels at ``angle`` degrees, sampled 8× per pixel, normalised."""
    r = max(1, math.ceil(length / 2))
    k = torch.zeros(2 * r + 1, 2 * r + 1, dtype=torch.float64)
    a = math.radians(angle)
    for t in torch.linspace(-length / 2, length / 2, max(2, int(8 * length))):
        x, y = r + float(t) * math.cos(a), r - float(t) * math.sin(a)
        k[int(round(y)), int(round(x))] += 1
    return (k / k.sum()).float()


@dataclass
class Blur(Operator):
    kind: str                     # "gauss" or "motion"
    params: Tuple[float, ...]
    name = "blur"
    kernel: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self.kernel = _gauss_kernel(*self.params) if self.kind == "gauss" else _motion_kernel(*self.params)

    def __call__(self, hr):
        k = self.kernel.to(hr.device, hr.dtype)
        p = k.shape[-1] // 2
        x = F.pad(hr, (p, p, p, p), mode="reflect" if p < hr.shape[-1] else "replicate")
        c = hr.shape[1]
        return F.conv2d(x, k[None, None].expand(c, 1, -1, -1), groups=c)

    def describe(self):
        keys = ("sigma",) if self.kind == "gauss" else ("length", "angle")
        return {"name": "blur", "kind": self.kind, **dict(zip(keys, self.params))}


class Gray(Operator):
    name = "gray"

    def __call__(self, x):
        w = torch.tensor(LUMA, dtype=x.dtype, device=x.device)
        return (x * w[:, None, None]).sum(1, keepdim=True).expand(-1, 3, -1, -1)


@dataclass
class Mask(Operator):
    """Only the pixels where ``known`` is 1 count (inpainting); ``known`` is (h, w)."""

    known: torch.Tensor
    path: str = ""
    name = "mask"

    def __post_init__(self):
        self.weight = self.known.float()[None, None]

    def __call__(self, x):
        return x

    def describe(self):
        return {"name": "mask", "path": self.path, "known": float(self.known.float().mean())}


class Warp(Operator):
    """The model frame seen in a photo: the photo's own pixels around a face are the measurement.

    ``to_frame`` is the 2×3 similarity from photo coordinates to model-frame
    coordinates (pixel corners at integers, as PIL's transforms use), ``box`` the
    photo region (x0, y0, w, h) that the frame covers. Each photo pixel of the
    box becomes the average of the HR face over its footprint: the face is
    area-resized to about the photo's scale, then sampled bilinearly at the
    pixel's centre. Pixels whose footprint leaves the frame do not count.
    Made for faces smaller in the photo than the model's frame (a LR photo).
    """

    name = "warp"

    def __init__(self, to_frame, box: Tuple[int, int, int, int], resolution: int):
        M = torch.as_tensor(to_frame, dtype=torch.float64)
        self.to_frame, self.box, self.resolution = M, tuple(int(v) for v in box), int(resolution)
        x0, y0, w, h = self.box
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + y0 + 0.5,
                                torch.arange(w, dtype=torch.float64) + x0 + 0.5, indexing="ij")
        qx = M[0, 0] * xs + M[0, 1] * ys + M[0, 2]
        qy = M[1, 0] * xs + M[1, 1] * ys + M[1, 2]
        self.scale = float(torch.linalg.det(M[:, :2]).abs().sqrt())  # model pixels per photo pixel
        half, R = self.scale / 2, float(resolution)
        inside = (qx >= half) & (qx <= R - half) & (qy >= half) & (qy <= R - half)
        if not bool(inside.any()):
            raise OperatorSpecError("the face's frame covers no whole pixel of the photo")
        self.weight = inside.float()[None, None]
        self.size = max(1, min(self.resolution, round(self.resolution / self.scale)))
        self.grid = torch.stack([qx / R * 2 - 1, qy / R * 2 - 1], dim=-1).float()[None]  # (1, h, w, 2)

    def __call__(self, hr):
        x = hr if self.size >= hr.shape[-1] else F.interpolate(hr, size=(self.size, self.size), mode="area")
        grid = self.grid.to(hr.device, hr.dtype).expand(hr.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def describe(self):
        return {"name": "warp", "box": list(self.box), "photo_px_per_model_px": round(1 / self.scale, 4),
                "to_frame": [[round(float(v), 6) for v in row] for row in self.to_frame]}


@dataclass
class Custom(Operator):
    """Any differentiable ``fn(hr) -> lr`` (Python API only)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    name = "custom"

    def __call__(self, hr):
        return self.fn(hr)

    def describe(self):
        return {"name": "custom", "fn": getattr(self.fn, "__name__", type(self.fn).__name__)}


class Compose(Operator):
    """Operators applied left to right; the weight is the mask's, if any."""

    name = "compose"

    def __init__(self, ops: Sequence[Operator]):
        self.ops = list(ops)
        masks = [op for op in self.ops if op.weight is not None]
        self.weight = masks[-1].weight if masks else None

    def __call__(self, hr):
        for op in self.ops:
            hr = op(hr)
        return hr

    def describe(self):
        if len(self.ops) == 1:
            return self.ops[0].describe()
        return {"name": "+".join(op.name for op in self.ops), "parts": [op.describe() for op in self.ops]}


# ---------------------------------------------------------------------------
# Defaults and specs


def default_resampling(h: int, w: int, resolution: int) -> Operator:
    """``bicubic:F`` when an (h, w) input is the exact downscale size, else ``resize:HxW``; larger inputs are refused."""
    factor = downscale_factor(resolution, h) if h == w else None
    if factor is not None:
        return Bicubic(factor)
    if h > resolution or w > resolution:
        raise InputSizeError(f"{w}×{h} is larger than the model's {resolution}×{resolution} output, so no "
                             f"downscale of it can match; for a photo use --align, or shrink it with --lr-size")
    return Resize((h, w))


_ORDER = {"blur": 0, "bicubic": 1, "resize": 1, "box": 1, "nearest": 1, "gray": 2, "mask": 3}


def _numbers(text: str, what: str, n: Optional[int] = None, kind=float) -> List:
    try:
        values = [kind(v) for v in re.split(r"[,x×]", text) if v != ""]
    except ValueError:
        raise OperatorSpecError(f"{what}: {text!r} is not a list of numbers") from None
    if n is not None and len(values) != n:
        raise OperatorSpecError(f"{what}: expected {n} numbers, got {text!r}")
    return values


def parse_term(term: str, lr_size: Tuple[int, int], resolution: int) -> Operator:
    """One ``+``-separated term of a spec; ``lr_size`` is the input's (h, w)."""
    name, _, rest = term.strip().partition(":")
    name = name.lower()
    h, w = lr_size
    if name == "bicubic":
        (f,) = _numbers(rest, "bicubic:F", 1, int)
        if f < 1 or resolution % f:
            raise OperatorSpecError(f"bicubic:{f}: the factor must divide the model's {resolution} px")
        if (resolution // f, resolution // f) != (h, w):
            raise OperatorSpecError(f"bicubic:{f} gives {resolution // f}×{resolution // f} px, but the input is "
                                    f"{w}×{h}")
        return Bicubic(f)
    if name == "resize":
        rh, rw = _numbers(rest, "resize:HxW", 2, int) if rest else (h, w)
        if (rh, rw) != (h, w):
            raise OperatorSpecError(f"resize:{rh}x{rw} does not match the input's {h}x{w}")
        if rh > resolution or rw > resolution or min(rh, rw) < 1:
            raise OperatorSpecError(f"resize:{rh}x{rw}: sizes go from 1 to the model's {resolution} px")
        return Resize((rh, rw))
    if name == "box":
        block_s, _, off = rest.partition("@")
        (b,) = _numbers(block_s, "box:B", 1, int)
        ox, oy = _numbers(off, "box:B@ox,oy", 2, int) if off else (0, 0)
        if b < 1 or b > max(h, w):
            raise OperatorSpecError(f"box:{b}: the block must be from 1 to the input's size")
        return Box(b, (ox % b, oy % b), (h, w))
    if name == "nearest":
        f_s, _, ph = rest.partition("@")
        (f,) = _numbers(f_s, "nearest:F", 1, int)
        phase = _numbers(ph, "nearest:F@phase", None, int) if ph else [0]
        px, py = (phase * 2)[:2] if len(phase) == 1 else phase[:2]
        if f < 1 or resolution % f or (resolution // f, resolution // f) != (h, w):
            raise OperatorSpecError(f"nearest:{f} gives {resolution // max(f, 1)} px, but the input is {w}×{h}")
        if not (0 <= px < f and 0 <= py < f):
            raise OperatorSpecError(f"nearest:{f}@{ph}: the phase must be from 0 to {f - 1}")
        return Nearest(f, (px, py))
    if name == "blur":
        kind, _, params = rest.partition(":")
        if kind == "gauss":
            (sigma,) = _numbers(params, "blur:gauss:σ", 1)
            if not 0 < sigma <= 64:
                raise OperatorSpecError(f"blur:gauss:{sigma}: σ must be in (0, 64]")
            return Blur("gauss", (sigma,))
        if kind == "motion":
            length, angle = _numbers(params, "blur:motion:len,angle", 2)
            if not 1 <= length <= 256:
                raise OperatorSpecError(f"blur:motion:{length}: the length must be from 1 to 256 px")
            return Blur("motion", (length, angle))
        raise OperatorSpecError(f"blur:{kind}: the blurs are gauss:σ and motion:len,angle")
    if name == "gray":
        return Gray()
    if name == "mask":
        return load_mask(rest, (h, w))
    raise OperatorSpecError(f"unknown operator {name!r}; the operators are bicubic:F, resize:HxW, box:B@ox,oy, "
                            f"nearest:F@phase, blur:gauss:σ, blur:motion:len,angle, gray and mask:PATH, joined by +")


def load_mask(path: str, size: Tuple[int, int]) -> Mask:
    from ..images import load_rgb, pil_to_tensor

    try:
        img = load_rgb(path)
    except PulseError as exc:
        raise OperatorSpecError(f"mask:{path}: {exc}") from None
    if (img.size[1], img.size[0]) != tuple(size):
        raise OperatorSpecError(f"mask:{path} is {img.size[0]}×{img.size[1]}; it must be the input's "
                                f"{size[1]}×{size[0]}")
    known = pil_to_tensor(img).mean(0) > 0.5
    if not bool(known.any()):
        raise OperatorSpecError(f"mask:{path} marks no pixel as known (white)")
    return Mask(known, path)


def parse_operator(spec: str, lr_size: Tuple[int, int], resolution: int) -> Compose:
    """A spec such as ``gray+box:8@3,5`` for an input of (h, w) = ``lr_size`` on a ``resolution``-px model."""
    terms = [t for t in spec.split("+") if t.strip()]
    if not terms:
        raise OperatorSpecError("empty operator spec")
    ops = [parse_term(t, lr_size, resolution) for t in terms]
    if sum(_ORDER[op.name] == 1 for op in ops) > 1:
        raise OperatorSpecError(f"{spec}: at most one resampling term (bicubic, resize, box, nearest)")
    if not any(_ORDER[op.name] == 1 for op in ops):
        ops.append(default_resampling(*lr_size, resolution))
    return Compose(sorted(ops, key=lambda op: _ORDER[op.name]))


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


# ---------------------------------------------------------------------------
# Detection from the input


def is_gray(lr: torch.Tensor, tol: float = 1 / 255) -> bool:
    """True when the three channels of a (3, h, w) input are equal (a grayscale photo saved as RGB)."""
    return bool((lr.max(0).values - lr.min(0).values).max() <= tol)


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


def spec_text(desc: dict) -> str:
    """A ``describe()`` dict back as a spec string (``box:8@3,5+gray``), for logs, reports and PNG text."""
    if "parts" in desc:
        return "+".join(spec_text(p) for p in desc["parts"])
    name = desc["name"]
    if name == "bicubic":
        return f"bicubic:{desc['factor']}"
    if name == "resize":
        return f"resize:{desc['size'][0]}x{desc['size'][1]}"
    if name == "box":
        return f"box:{desc['block']}@{desc['offset'][0]},{desc['offset'][1]}"
    if name == "nearest":
        return f"nearest:{desc['factor']}@{desc['phase'][0]},{desc['phase'][1]}"
    if name == "blur":
        return f"blur:gauss:{desc['sigma']}" if desc["kind"] == "gauss" else \
            f"blur:motion:{desc['length']},{desc['angle']}"
    if name == "mask":
        return f"mask:{desc['path']}"
    if name == "warp":
        x0, y0, w, h = desc["box"]
        return f"warp:{w}x{h}@{x0},{y0}"
    return name
