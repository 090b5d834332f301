"""What every format reader shares: the format names, what a reader returns, and the checks.

* :class:`Format` -- the one vocabulary of file formats: what sniffing returns,
  what a registry entry declares and what a loaded model records;
* :class:`LoadedWeights` -- what every ``load_*`` function returns;
* :func:`shape_of` -- a named tensor's shape, or a one-line error;
* :func:`check_keys` / :func:`load_state_strict` -- the missing / unknown /
  misshapen / non-finite names check every reader ends with;
* :func:`check_parameter_count` and :func:`build_checked` -- no file can make the
  loader allocate more than :data:`MAX_PARAMETERS` parameters.

Nothing here imports torch at import time (the registry reads :class:`Format`
and must stay torch-free), and nothing here imports another format module.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from ..errors import ModelFormatError


class Format(str, enum.Enum):
    """A model file's format (the value is what reports and ``pulse models list`` show)."""

    PULSE_SR = "pulse-sr"                  # the project's own .safetensors (any family)
    TF_PICKLE = "tf-pickle"                # NVIDIA's TensorFlow StyleGAN v1 (or StyleGAN2) pickles
    TF_STYLEGAN2 = "tf-stylegan2"          # what a TF pickle holding a StyleGAN2 loads as
    NVIDIA_PICKLE = "nvidia-pickle"        # stylegan2-ada-pytorch / stylegan3 torch pickles
    ROSINALITY = "rosinality"              # rosinality's stylegan2-pytorch checkpoints
    PULSE_STATE_DICT = "pulse-state-dict"  # PULSE's synthesis.pt / mapping.pt (torch state dicts)
    GAUSSIAN_FIT = "gaussian-fit"          # PULSE's gaussian_fit.pt on its own

    def __str__(self) -> str:
        return self.value


# What sniffing can tell from the bytes: a TF pickle is TF_PICKLE whichever generator it holds.
SNIFFABLE = (Format.PULSE_SR, Format.TF_PICKLE, Format.NVIDIA_PICKLE, Format.ROSINALITY, Format.PULSE_STATE_DICT)


@dataclasses.dataclass
class LoadedWeights:
    """What a format module returns: the generator, and what the file said besides.

    The generator knows nothing of this; :func:`pulse_sr.load_model` turns it
    into a :class:`pulse_sr.PulseModel`.
    """

    generator: Any                                   # The network, in eval mode, gradients off.
    format: Format                                   # The file's format.
    has_mapping: bool = True                         # False when the mapping weights are random (no file).
    gaussian_fit: Optional[Dict[str, Any]] = None    # {'mean', 'std'} tensors if the file carries a fit.
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)  # Licence, crop template, ...


def shape_of(tensors: Mapping[str, Any], name: str, ndim: int, what: str, noun: str = "variable") -> Tuple[int, ...]:
    """The shape of ``tensors[name]`` (a tensor or array), which must have ``ndim`` dimensions; else one line."""
    import numpy as np

    label = f"{noun} {name}" if noun else name
    if name not in tensors:
        raise ModelFormatError(f"{what}: missing {label} (needed to infer the architecture)")
    shape = tuple(int(n) for n in np.shape(tensors[name]))
    if len(shape) != ndim:
        raise ModelFormatError(f"{what}: {label} has shape {shape}, expected {ndim} dimensions")
    return shape


def count_indexed(names, template: str, start: int = 0) -> int:
    """How many of ``template.format(start)``, ``template.format(start + 1)``, ... are in ``names``, in a row."""
    n = 0
    while template.format(start + n) in names:
        n += 1
    return n


# ---------------------------------------------------------------------------
# Names


def _listed(names, limit: Optional[int]) -> str:
    names = sorted(names)
    if limit is not None and len(names) > limit:
        return f"{names[:limit]}..."
    return str(names)


def check_keys(what: str, have: Iterable[str], want: Iterable[str], *, against: str, noun: str = "keys",
               ignored: Iterable[str] = (), limit: Optional[int] = None,
               shapes: Optional[Mapping[str, tuple]] = None) -> None:
    """Raise ModelFormatError unless ``have`` holds exactly the names ``want`` (plus any ``ignored``).

    ``what`` names the file, ``against`` the expected structure ("a 16px StyleGAN v1
    generator"). With ``shapes`` ({name: (file shape, model shape)}), names
    whose shapes differ are reported too.
    """
    have, want = set(have), set(want)
    missing = want - have
    unknown = have - want - set(ignored)
    bad = {k: v for k, v in (shapes or {}).items() if tuple(v[0]) != tuple(v[1])}
    if not (missing or unknown or bad):
        return
    parts = []
    if missing:
        parts.append(f"missing {noun} {_listed(missing, limit)}")
    if unknown:
        parts.append(f"unknown {noun} {_listed(unknown, limit)}")
    if bad:
        parts.append("shape mismatch " + ", ".join(
            f"{k}: file {tuple(f)} vs model {tuple(m)}" for k, (f, m) in sorted(bad.items())[:limit or None]))
    raise ModelFormatError(f"{what}: does not match {against}: " + "; ".join(parts))


def load_state_strict(module, state: Mapping, what: str) -> None:
    """Copy ``state`` into ``module``; any missing, unknown or misshapen entry is an error."""
    own = module.state_dict()
    shapes = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in set(own) & set(state)}
    check_keys(what, state, own, against="the architecture", limit=5, shapes=shapes)
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all()))
    if bad:
        raise ModelFormatError(f"{what}: NaN or infinite values in {_listed(bad, 5)}; the weights are corrupt")
    module.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------
# Size


# A file's constructor arguments are untrusted: a 1.3 KB file saying fmap_base=2**30 would
# otherwise allocate tens of GB. NVIDIA's 1024-px generator has about 30 M parameters.
MAX_PARAMETERS = 300_000_000


def check_parameter_count(n: int, what: str, source: str) -> None:
    """ModelFormatError if ``source`` (what the number came from) describes over MAX_PARAMETERS parameters."""
    if n > MAX_PARAMETERS:
        raise ModelFormatError(f"{what}: {source} describes {n / 1e6:.0f} M parameters "
                               f"({n * 4 / 2 ** 30:.1f} GiB), over the {MAX_PARAMETERS / 1e6:.0f} M limit; "
                               f"refusing to build it")


def _int_in(kwargs: Mapping, key: str, default, low: int, high: int, what: str) -> int:
    v = kwargs.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not low <= v <= high:
        raise ModelFormatError(f"{what}: {key}={v!r} is not an integer in [{low}, {high}]")
    return int(v)


def stylegan3_parameter_bound(kwargs: Mapping, what: str) -> int:
    """An upper bound on what NVIDIA's StyleGAN3 ``Generator(**kwargs)`` allocates, from the numbers alone."""
    mapping = kwargs.get("mapping_kwargs") or {}
    if not isinstance(mapping, Mapping):
        raise ModelFormatError(f"{what}: mapping_kwargs is not a dict")
    z = _int_in(kwargs, "z_dim", None, 1, 4096, what)
    w = _int_in(kwargs, "w_dim", None, 1, 4096, what)
    res = _int_in(kwargs, "img_resolution", None, 4, 1024, what)
    rgb = _int_in(kwargs, "img_channels", 3, 1, 4, what)
    layers = _int_in(kwargs, "num_layers", 14, 1, 32, what)
    cmax = _int_in(kwargs, "channel_max", 512, 1, 4096, what)
    _int_in(kwargs, "channel_base", 32768, 1, 1 << 24, what)
    k = _int_in(kwargs, "conv_kernel", 3, 1, 7, what)
    taps = _int_in(kwargs, "filter_size", 6, 1, 16, what) * _int_in(kwargs, "lrelu_upsampling", 2, 1, 4, what) * 2
    _int_in(kwargs, "margin_size", 10, 0, 256, what)
    if res & (res - 1):
        raise ModelFormatError(f"{what}: img_resolution={res} is not a power of two")
    n_map = _int_in(mapping, "num_layers", 2, 1, 32, what)
    n = (n_map * (max(z, w) ** 2 + max(z, w)) + w) + (w * 4 + 4 + cmax * 3 + cmax * cmax + 9)
    per_layer = w * cmax + cmax + cmax * cmax * k * k + cmax + 1 + 2 * taps * taps
    return n + (layers + 2) * per_layer + w * cmax + cmax + rgb * cmax + rgb


def parameter_bound(cfg) -> int:
    """An upper bound on the tensors a generator config of any family allocates, from its numbers alone."""
    if cfg.family == "stylegan2":
        return cfg.parameter_count()
    if cfg.family == "stylegan3":
        return stylegan3_parameter_bound(cfg.init_kwargs(), "config")
    width = max(cfg.latent_dim, cfg.mapping_fmaps, cfg.w_dim)
    fmaps = max(1, min(cfg.fmap_max, cfg.fmap_base))
    mapping = cfg.mapping_layers * (width * width + width)
    # Per layer: a 4×4 (fused) or 3×3 conv, the style affine, noise strength, bias, a noise map.
    layer = 16 * fmaps * fmaps + 2 * cfg.w_dim * fmaps + 4 * fmaps + cfg.resolution ** 2
    to_rgb = cfg.resolution_log2 * (cfg.num_channels * fmaps + cfg.num_channels)
    return mapping + cfg.num_ws * layer + to_rgb + 16 * fmaps


def build_checked(cfg, what: str, source: str = "its config"):
    """The generator ``cfg`` describes, after checking that it is of sane size (before any allocation)."""
    import torch

    from ..networks import build_generator

    n = parameter_bound(cfg)
    if n > MAX_PARAMETERS and cfg.family == "stylegan1":
        # The bound is loose: count exactly on the meta device (no memory, but its first
        # use imports sympy through torch._refs, about 1.5 s, so only when needed).
        with torch.device("meta"):
            shapes = build_generator(cfg)
        n = sum(t.numel() for t in shapes.state_dict().values())
    check_parameter_count(n, what, source)
    return build_generator(cfg)
