"""The loaded model: a generator and what was loaded with it, as one value.

:func:`load_model` is the one entry point for every weight format and registry
name. It returns a :class:`PulseModel` whose Gaussian prior is always present:
stored with the weights, given as PULSE's ``gaussian_fit.pt``, read from the
runtime cache, or computed once (1M mapping samples, supplement Sec. 2.4) on
the device the model is loaded onto, and cached. The generator itself carries
no loader state (stylegan3's ``legacy.load_network_pkl`` returns a dict for the
same reason). :func:`save_model` writes any model, of any family, to the
project's own ``.safetensors`` file, which :func:`load_model` reads back to an
identical model; :func:`inspect_model` tells a model's resolution and crop
convention without building it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import torch

from .errors import ModelFormatError, SettingsError
from .runtime import trusted_file
from .search.prior import GaussianPrior, compute_gaussian_fit, mapping_hash

FIT_SAMPLES = 1_000_000  # Mapping samples behind a computed Gaussian fit (supplement Sec. 2.4).


@dataclasses.dataclass(frozen=True)
class PulseModel:
    """A generator with its Gaussian prior, crop convention and provenance.

    ``crop_template`` is a landmark template dict (``{"left_eye": [x, y], ...,
    "size": R}``), ``"ffhq"`` (NVIDIA's FFHQ alignment), or None when the model records no convention
    (then ``pulse align`` needs ``--template``). ``metadata`` holds whatever
    else the file recorded (licence, training data, ...).
    """

    generator: torch.nn.Module                     # A pulse_sr.networks Generator, eval mode, no grads.
    prior: GaussianPrior                           # The Gaussian fit, on the generator's device.
    crop_template: Union[Dict[str, Any], str, None] = None  # How faces are framed; see above.
    source: str = ""                               # Registry name or path it was loaded from.
    format: str = ""                               # File format (a pulse_sr.formats.Format value).
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)  # Licence, training data, ...

    def __post_init__(self):
        if not isinstance(self.prior, GaussianPrior):  # a {'mean', 'std'} dict, as PULSE stores it
            object.__setattr__(self, "prior", GaussianPrior.of(self.prior, int(self.generator.w_dim)))

    @property
    def gaussian_fit(self) -> GaussianPrior:
        """The prior, under its earlier name (``model.gaussian_fit["mean"]`` still reads)."""
        return self.prior

    @property
    def resolution(self) -> int:
        return int(self.generator.resolution)

    @property
    def family(self) -> str:
        return self.generator.family

    @property
    def device(self) -> torch.device:
        return self.generator.w_avg.device

    def to(self, device) -> "PulseModel":
        """This model on ``device``: itself if already there, else a copy (the original stays put)."""
        device = torch.device(device)
        if _same_device(self.device, device):
            return self
        G = copy.deepcopy(self.generator).to(device)
        return dataclasses.replace(self, generator=G, prior=self.prior.to(device))

    def __repr__(self) -> str:
        return (f"PulseModel(source={self.source!r}, format={str(self.format)!r}, family={self.family!r}, "
                f"resolution={self.resolution}, device={self.device})")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What :func:`inspect_model` tells without building a network: enough to frame inputs."""

    source: str
    resolution: int
    crop_template: Union[Dict[str, Any], str, None]
    family: Optional[str] = None        # None when the file does not say without being read
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.type == "cpu" or b.index is None


# ---------------------------------------------------------------------------
# The Gaussian prior: file, cache or computed, always on the model's device


def cached_gaussian_fit(G, cache: Optional[Path], num_samples: int = FIT_SAMPLES,
                        progress: Optional[Callable[[int, int], None]] = None) -> GaussianPrior:
    """The fit of ``G``'s mapping from the cache, else computed where ``G``'s weights are and written there.

    The cache key is the hash of the mapping weights, so a changed model never
    reuses a stale fit; a corrupt entry is recomputed. The entry is written to a
    temporary name unique to this process and renamed into place, so ranks of a
    torchrun job that compute the same fit never write one file.
    """
    device = next(G.parameters()).device
    path = None
    if cache is not None:
        path = Path(cache) / f"gaussian_fit-{mapping_hash(G)[:24]}-{num_samples}.pt"
        if path.exists() and not trusted_file(path):
            path.unlink(missing_ok=True)  # not ours, or writable by others: recompute rather than trust it
        if path.exists():
            try:
                from .formats.torch_files import torch_load_weights
                fit = torch_load_weights(path, noun="cached Gaussian fit")
                return GaussianPrior.of(fit, G.w_dim, str(path)).to(device)
            except Exception:
                path.unlink(missing_ok=True)
    prior = compute_gaussian_fit(G, num_samples, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            torch.save({k: v.cpu() for k, v in prior.to_dict().items()}, tmp)
            os.chmod(tmp, 0o600)  # only files nobody else can write are read back
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return prior


def _prior_for(G, loaded, fit_path, main, fit_progress) -> GaussianPrior:
    if fit_path:
        from .formats.pulse_pt import load_gaussian_fit_pt
        return GaussianPrior.of(load_gaussian_fit_pt(fit_path, dim=G.w_dim), G.w_dim, str(fit_path))
    if loaded.gaussian_fit is not None:
        return GaussianPrior.of(loaded.gaussian_fit, G.w_dim, str(main))
    if not loaded.has_mapping:
        raise ModelFormatError("this generator has no mapping network, so its Gaussian fit cannot be "
                               "computed: pass the mapping weights (--mapping mapping.pt) or a "
                               "gaussian_fit.pt (--gaussian-fit)")
    from .runtime import trusted_cache
    return cached_gaussian_fit(G, trusted_cache("gaussian_fit"), progress=fit_progress)


# ---------------------------------------------------------------------------
# Loading, saving, inspecting


def load_model(name_or_path, *, device=None, mapping_path=None, gaussian_fit_path=None,
               impl: Optional[str] = None,
               fit_progress: Optional[Callable[[int, int], None]] = None) -> PulseModel:
    """Load a model from a registry name (e.g. ``"default"``) or a file path.

    ``mapping_path`` goes with PULSE's ``synthesis.pt``; ``gaussian_fit_path``
    (PULSE's ``gaussian_fit.pt``, of the model's ``w_dim``) overrides the fit
    stored with the model. Without either fit, it is read from
    ``$PULSE_CACHE/gaussian_fit`` or computed on ``device`` (about a minute on a
    CPU; ``fit_progress(done, total)`` reports it). ``impl`` sets the epilogue
    implementation of a family that has several (StyleGAN v1, see
    :mod:`pulse_sr.ops.epilogue`). The file is read on the CPU and the model moved
    to ``device`` (default: the CPU) before its fit is computed.
    """
    from .align.templates import crop_template_from
    from .formats import load_file
    from .hub.registry import resolve_model

    from .safe_paths import require_regular_file

    for option, given in (("--mapping", mapping_path), ("--gaussian-fit", gaussian_fit_path)):
        if given is not None:  # checked even when unused: a FIFO would block whoever reads it
            try:
                require_regular_file(given, f"{option} file")
            except SettingsError:
                raise
            except Exception as exc:
                raise ModelFormatError(str(exc)) from None
    files = resolve_model(str(name_or_path))
    loaded = load_file(Path(files.main), mapping_path or files.mapping, expect=files.kind)
    G = loaded.generator
    if impl is not None:
        if not hasattr(G, "set_impl"):
            raise SettingsError(f"impl={impl!r}: a {G.family} generator has one implementation; impl "
                                f"applies to StyleGAN v1 only")
        G.set_impl(impl)
    if device is not None:  # freshly loaded, so moving it in place touches nobody else's model
        G.to(device)
    prior = _prior_for(G, loaded, gaussian_fit_path or files.gaussian_fit, files.main, fit_progress)
    metadata = dict(loaded.metadata)
    entry = files.entry
    if entry is not None:  # what the registry knows about a model (its framing and subject)
        if entry.alignment:
            metadata.setdefault("alignment", entry.alignment)
        metadata.setdefault("domain", entry.domain)
    return PulseModel(G.eval().requires_grad_(False), prior.to(G.w_avg.device),
                      crop_template_from(metadata, int(G.resolution)), source=str(name_or_path),
                      format=loaded.format, metadata=metadata)


def save_model(model: PulseModel, path, *, half: bool = False) -> Path:
    """Write ``model`` (any family) with its config, Gaussian prior, crop convention and metadata to
    one ``.safetensors`` file that :func:`load_model` reads back to an identical model.

    ``half`` stores the weights as float16 (the bundled model is stored so); they load as float32.
    """
    from .formats.safetensors_file import save_generator

    extras = {k: v for k, v in model.metadata.items() if k != "crop_template"}
    if isinstance(model.crop_template, dict):
        extras["crop_template"] = model.crop_template
    elif model.crop_template is not None:
        extras["alignment"] = model.crop_template
    return save_generator(model.generator, path, prior=model.prior, extras=extras, half=half)


def inspect_model(name_or_path) -> ModelInfo:
    """A model's resolution, crop convention and family, read from its file's header or the registry
    when they say it (the project's own files, registry entries with a resolution); otherwise the
    network is built to learn them, but no Gaussian fit is ever computed. For ``pulse align``."""
    from .align.templates import crop_template_from
    from .formats import Format, load_file
    from .formats.safetensors_file import read_pulse_header
    from .hub.registry import resolve_model

    from .formats.sniff import detect_format
    from .hub.registry import REGISTRY, entry_resolution

    entry = REGISTRY.get(str(name_or_path))
    meta: Dict[str, Any] = {}
    if entry is not None:
        if entry.alignment:
            meta["alignment"] = entry.alignment
        meta["domain"] = entry.domain
        res = entry_resolution(entry)
        if res and not entry.bundled:  # the registry says enough: no download needed to frame inputs
            return ModelInfo(str(name_or_path), int(res), crop_template_from(meta, int(res)), None, meta)
    files = resolve_model(str(name_or_path))
    if detect_format(files.main) == Format.PULSE_SR:
        config, extras = read_pulse_header(files.main)
        meta = {**extras, **meta}
        res = int(config.get("resolution") or config.get("img_resolution"))
        return ModelInfo(str(name_or_path), res, crop_template_from(meta, res), config.get("family", "stylegan1"),
                         meta)
    loaded = load_file(Path(files.main), files.mapping, expect=files.kind)
    meta = {**loaded.metadata, **meta}
    res = int(loaded.generator.resolution)
    return ModelInfo(str(name_or_path), res, crop_template_from(meta, res), loaded.generator.family, meta)


def load_generator(path_or_name, mapping_path=None, gaussian_fit_path=None) -> PulseModel:
    """Deprecated alias of :func:`load_model`, kept for one release; it now returns a :class:`PulseModel`."""
    warnings.warn("pulse_sr.load_generator is deprecated and will be removed in the next release; "
                  "use pulse_sr.load_model, which returns a PulseModel (.generator is the network)",
                  DeprecationWarning, stacklevel=2)
    return load_model(path_or_name, mapping_path=mapping_path, gaussian_fit_path=gaussian_fit_path)
