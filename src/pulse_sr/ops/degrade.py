"""Degradations of the PULSE paper's robustness experiment (Sec. 5, Fig. 6, and
Fig. 2 of its appendix): Gaussian noise of std 25 and 50 (0–255 scale) and
salt-and-pepper noise of density 0.05, both added to the LR image after
downscaling; and motion blur of length 100 in a random direction, applied to the
HR image before downscaling.

Every op takes (B, 3, H, W) float tensors in [0, 1], returns a new tensor of the
same shape clamped to [0, 1], and draws its randomness from an explicit
``torch.Generator`` so that an evaluation can be repeated exactly.

``parse_degradations("gaussian:25,motion:100,saltpepper:0.05")`` turns the
``pulse eval --degrade`` option into a list of :class:`Degradation` callables whose
``stage`` says where they act: ``"hr"`` (before downscaling) or ``"lr"`` (after).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..errors import DegradationSpecError
from .blur_kernels import motion_kernel

__all__ = [
    "gaussian_noise", "motion_blur", "motion_kernel", "salt_and_pepper",
    "Degradation", "DegradationSpecError", "parse_degradations",
]



def _check_batch(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")


def _draw(kind: str, shape, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    # Draw on the generator's device, so that one CPU generator gives the same
    # numbers whatever device the images are on.
    device = generator.device if generator is not None else x.device
    fn = torch.randn if kind == "normal" else torch.rand
    return fn(shape, generator=generator, device=device, dtype=torch.float32).to(x.device, x.dtype)


def gaussian_noise(x: torch.Tensor, sigma255: float, *,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Add i.i.d. Gaussian noise of std ``sigma255 / 255`` to every value, then clamp to [0, 1].

    Args:
        x: (B, 3, H, W) in [0, 1].
        sigma255: standard deviation on the 0–255 scale (the paper uses 25 and 50).
        generator: source of the noise.
    """
    _check_batch(x, "gaussian_noise")
    if not sigma255 >= 0:
        raise ValueError(f"gaussian_noise: sigma must be >= 0, got {sigma255}")
    noise = _draw("normal", x.shape, x, generator)
    return (x + noise * (sigma255 / 255.0)).clamp(0.0, 1.0)


def salt_and_pepper(x: torch.Tensor, density: float, *,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Set a fraction ``density`` of the pixels to black or white, each with probability 1/2.

    A pixel is hit in all three channels at once (black or white specks, not
    coloured ones); which pixels are hit is drawn independently per pixel, as in
    MATLAB's ``imnoise(I, 'salt & pepper', d)``.

    Args:
        x: (B, 3, H, W) in [0, 1].
        density: probability that a pixel is replaced, in [0, 1] (the paper uses 0.05).
        generator: source of the noise.
    """
    _check_batch(x, "salt_and_pepper")
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"salt_and_pepper: density must be in [0, 1], got {density}")
    b, _, h, w = x.shape
    u = _draw("uniform", (b, 1, h, w), x, generator)
    out = x.clone()
    out = torch.where(u < density / 2, torch.zeros_like(x), out)  # pepper
    out = torch.where((u >= density / 2) & (u < density), torch.ones_like(x), out)  # salt
    return out


def _reflect_index(n: int, pad: int, device) -> torch.Tensor:
    # Indices of a reflect-padded axis (edge not repeated: d c b | a b c d | c b a);
    # unlike F.pad it allows pads as wide as or wider than the image.
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def _convolve_reflect(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Correlate each channel of (B, C, H, W) x with an odd (K, K) kernel, reflect borders, via FFT."""
    b, c, h, w = x.shape
    r = k.shape[0] // 2
    xp = x[:, :, _reflect_index(h, r, x.device)][:, :, :, _reflect_index(w, r, x.device)]
    hp, wp = h + 2 * r, w + 2 * r
    # The kernel is point-symmetric, so correlation and convolution agree.
    spec = torch.fft.rfft2(xp.double(), s=(hp, wp)) * torch.fft.rfft2(k.double().to(x.device), s=(hp, wp))
    full = torch.fft.irfft2(spec, s=(hp, wp))
    return full[:, :, 2 * r:2 * r + h, 2 * r:2 * r + w].to(x.dtype)


def motion_blur(x: torch.Tensor, length: float, angle: Optional[float] = None, *,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Blur by a straight motion of ``length`` pixels; the paper applies it to the HR image.

    Args:
        x: (B, 3, H, W) in [0, 1].
        length: length of the motion in pixels of ``x`` (the paper: 100 at 1024×1024).
        angle: direction in degrees (see :func:`motion_kernel`); ``None`` draws one
            uniformly in [0, 180) per image from ``generator``.
        generator: source of the random directions.

    Borders are reflected, so the blur does not darken the edges.
    """
    _check_batch(x, "motion_blur")
    if angle is None:
        angles = (_draw("uniform", (x.shape[0],), x, generator) * 180.0).tolist()
    else:
        angles = [float(angle)] * x.shape[0]
    out = [_convolve_reflect(x[i:i + 1], motion_kernel(length, a)) for i, a in enumerate(angles)]
    return torch.cat(out).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------
# The --degrade option.

@dataclass(frozen=True)
class Degradation:
    """One named degradation, callable on a batch: ``d(x, generator=g)``."""

    name: str                     # as written in the spec, e.g. "gaussian:25"
    stage: str                    # "hr": before downscaling; "lr": after
    fn: Callable[..., torch.Tensor] = field(repr=False)
    params: Tuple[float, ...] = ()

    def __call__(self, x: torch.Tensor, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.fn(x, *self.params, generator=generator)


def _positive(v: float) -> bool:
    return v > 0


# kind → (function, stage, what the value is, check)
_KINDS: Dict[str, Tuple[Callable[..., torch.Tensor], str, str, Callable[[float], bool]]] = {
    "gaussian": (gaussian_noise, "lr", "noise std on the 0–255 scale, > 0", _positive),
    "motion": (motion_blur, "hr", "blur length in HR pixels, >= 1", lambda v: v >= 1),
    "saltpepper": (salt_and_pepper, "lr", "fraction of pixels, in (0, 1]", lambda v: 0 < v <= 1),
}


def _usage() -> str:
    return ", ".join(f"{k}:VALUE ({desc})" for k, (_, _, desc, _) in _KINDS.items())


def parse_degradations(spec: Optional[str]) -> List[Degradation]:
    """Parse a comma-separated list like ``"gaussian:25,gaussian:50,motion:100,saltpepper:0.05"``.

    An empty or ``None`` spec gives an empty list. Names are case-insensitive;
    ``salt-pepper`` and ``salt_and_pepper`` are accepted for ``saltpepper``.

    Raises:
        DegradationSpecError (a ValueError): unknown name, missing or bad value, or a duplicate.
    """
    out: List[Degradation] = []
    if spec is None or not spec.strip():
        return out
    seen = set()
    for item in spec.split(","):
        item = item.strip()
        if not item:
            raise DegradationSpecError(f"empty entry in degradation list {spec!r}")
        kind, sep, value = item.partition(":")
        key = kind.strip().lower().replace("-", "").replace("_", "")
        key = {"saltandpepper": "saltpepper", "sp": "saltpepper"}.get(key, key)
        if key not in _KINDS:
            raise DegradationSpecError(f"unknown degradation {kind.strip()!r} in {spec!r}; use {_usage()}")
        fn, stage, desc, ok = _KINDS[key]
        if not sep or not value.strip():
            raise DegradationSpecError(f"degradation {item!r} needs a value: {key}:VALUE ({desc})")
        try:
            v = float(value)
        except ValueError:
            raise DegradationSpecError(f"degradation {item!r}: {value.strip()!r} is not a number ({desc})") from None
        if not math.isfinite(v) or not ok(v):
            raise DegradationSpecError(f"degradation {item!r}: value out of range ({desc})")
        name = f"{key}:{value.strip()}"
        if name in seen:
            raise DegradationSpecError(f"degradation {name!r} is listed twice in {spec!r}")
        seen.add(name)
        out.append(Degradation(name=name, stage=stage, fn=fn, params=(v,)))
    return out
