"""The loaded model: a generator and what was loaded with it, as one value.

:func:`load_model` is the one entry point for every weight format and registry
name. It returns a :class:`PulseModel` whose Gaussian fit is always present:
stored with the weights, given as PULSE's ``gaussian_fit.pt``, read from the
runtime cache, or computed once (1M mapping samples, supplement Sec. 2.4) and
cached. The generator itself carries no loader state (stylegan3's
``legacy.load_network_pkl`` returns a dict for the same reason).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch

from .errors import ModelFormatError
from .runtime import trusted_file
from .search.prior import GaussianFit, compute_gaussian_fit, mapping_hash, validate_fit

FIT_SAMPLES = 1_000_000  # Mapping samples behind a computed Gaussian fit (supplement Sec. 2.4).


@dataclasses.dataclass(frozen=True)
class PulseModel:
    """A generator with its Gaussian fit, crop convention and provenance.

    ``crop_template`` is a landmark template dict (``{"left_eye": [x, y], ...,
    "size": R}``), ``"ffhq"`` (NVIDIA's FFHQ alignment), or None when the model records no convention
    (then ``pulse align`` needs ``--template``). ``metadata`` holds whatever
    else the file recorded (licence, training data, ...).
    """

    generator: torch.nn.Module                     # StyleGAN1/2/3Generator, eval mode, no grads.
    gaussian_fit: GaussianFit                      # {'mean': (w_dim,), 'std': (w_dim,)} on the generator's device.
    crop_template: Union[Dict[str, Any], str, None] = None  # How faces are framed; see above.
    source: str = ""                               # Registry name or path it was loaded from.
    format: str = ""                               # File format ('pulse-sr', 'tf-pickle', ...).
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)  # Licence, training data, ...

    @property
    def resolution(self) -> int:
        return int(self.generator.resolution)

    @property
    def device(self) -> torch.device:
        return self.generator.w_avg.device

    def to(self, device) -> "PulseModel":
        """This model on ``device``: itself if already there, else a copy (the original stays put)."""
        device = torch.device(device)
        if _same_device(self.device, device):
            return self
        G = copy.deepcopy(self.generator).to(device)
        fit = {k: v.to(device) for k, v in self.gaussian_fit.items()}
        return dataclasses.replace(self, generator=G, gaussian_fit=fit)

    def __repr__(self) -> str:
        return (f"PulseModel(source={self.source!r}, format={self.format!r}, resolution={self.resolution}, "
                f"device={self.device})")


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.type == "cpu" or b.index is None


def cached_gaussian_fit(G, cache: Optional[Path], num_samples: int = FIT_SAMPLES,
                        progress: Optional[Callable[[int, int], None]] = None) -> GaussianFit:
    """The fit of ``G``'s mapping from the cache, else computed and written there.

    The cache key is the hash of the mapping weights, so a changed model never
    reuses a stale fit; a corrupt entry is recomputed.
    """
    path = None
    if cache is not None:
        path = Path(cache) / f"gaussian_fit-{mapping_hash(G)[:24]}-{num_samples}.pt"
        if path.exists() and not trusted_file(path):
            path.unlink(missing_ok=True)  # not ours, or writable by others: recompute rather than trust it
        if path.exists():
            try:
                return validate_fit(torch.load(path, map_location="cpu", weights_only=True), G.w_dim, str(path))
            except Exception:
                path.unlink(missing_ok=True)
    fit = compute_gaussian_fit(G, num_samples, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(fit, tmp)
        os.chmod(tmp, 0o600)  # only files nobody else can write are read back
        tmp.replace(path)
    return fit


def load_model(name_or_path, *, device=None, mapping_path=None, gaussian_fit_path=None,
               impl: Optional[str] = None,
               fit_progress: Optional[Callable[[int, int], None]] = None) -> PulseModel:
    """Load a model from a registry name (e.g. ``"default"``) or a file path.

    ``mapping_path`` goes with PULSE's ``synthesis.pt``; ``gaussian_fit_path``
    (PULSE's ``gaussian_fit.pt``) overrides the fit stored with the model.
    Without either fit, it is read from ``$PULSE_CACHE/gaussian_fit`` or
    computed (about a minute on a CPU; ``fit_progress(done, total)`` reports
    it). ``impl`` sets the generator's epilogue implementation (see
    :mod:`pulse_sr.ops.epilogue`). The model is loaded on the CPU, then moved
    to ``device`` if one is given.
    """
    from .align.templates import crop_template_from
    from .formats import load_file
    from .hub.registry import resolve_model
    from .runtime import trusted_cache

    files = resolve_model(str(name_or_path))
    mapping_path = mapping_path or files.mapping
    loaded = load_file(Path(files.main), mapping_path)
    G = loaded.generator
    if impl is not None:
        G.set_impl(impl)
    fit_path = gaussian_fit_path or files.gaussian_fit
    if fit_path:
        from .formats.pulse_pt import load_gaussian_fit_pt
        fit = validate_fit(load_gaussian_fit_pt(fit_path), G.w_dim, str(fit_path))
    elif loaded.gaussian_fit is not None:
        fit = validate_fit(loaded.gaussian_fit, G.w_dim, str(files.main))
    elif not loaded.has_mapping:
        raise ModelFormatError("this generator has no mapping network, so its Gaussian fit cannot be "
                               "computed: pass the mapping weights (--mapping mapping.pt) or a "
                               "gaussian_fit.pt (--gaussian-fit)")
    else:
        fit = cached_gaussian_fit(G, trusted_cache("gaussian_fit"), progress=fit_progress)
    if device is not None:  # freshly loaded, so moving it in place touches nobody else's model
        G.to(device)
        fit = {k: v.to(device) for k, v in fit.items()}
    metadata = dict(loaded.metadata)
    entry = files.entry
    if entry is not None:  # what the registry knows about a model (its framing and subject)
        if entry.alignment:
            metadata.setdefault("alignment", entry.alignment)
        metadata.setdefault("domain", entry.domain)
    return PulseModel(G.eval().requires_grad_(False), fit, crop_template_from(metadata, int(G.resolution)),
                      source=str(name_or_path), format=loaded.format, metadata=metadata)


def load_generator(path_or_name, mapping_path=None, gaussian_fit_path=None) -> PulseModel:
    """Deprecated alias of :func:`load_model`, kept for one release; it now returns a :class:`PulseModel`."""
    warnings.warn("pulse_sr.load_generator is deprecated and will be removed in the next release; "
                  "use pulse_sr.load_model, which returns a PulseModel (.generator is the network)",
                  DeprecationWarning, stacklevel=2)
    return load_model(path_or_name, mapping_path=mapping_path, gaussian_fit_path=gaussian_fit_path)
