"""Known generator weights: where they come from, under which licence, and where
they live on disk once downloaded.

This module only describes and locates files; fetching them is
:mod:`pulse_sr.hub.download`. It imports neither torch nor the networks, so that
``pulse models list`` stays instant.

Downloaded files live in ``cache_dir() / NAME / FILENAME``; the bundled model
lives inside the installed package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..errors import ModelNotDownloadedError, PulseError, UnknownModelError
from ..formats.common import Format
from ..formats.safetensors_file import config_resolution, read_config
from ..runtime import cache_dir

__all__ = [
    "MODEL_KINDS", "ModelFile", "ModelEntry", "REGISTRY", "UnknownModelError",
    "cache_dir", "register", "get_entry", "known_names", "local_path", "model_dir",
    "model_status", "entry_resolution", "resolve_model", "ResolvedModel",
]

# What an entry's main file is: the one vocabulary of formats (pulse_sr.formats.Format).
MODEL_KINDS = tuple(f.value for f in Format)
# Older names of kinds, as entries were written before there was one vocabulary.
_KIND_ALIASES = {"pulse-synthesis": Format.PULSE_STATE_DICT, "pulse-mapping": Format.PULSE_STATE_DICT}

NVIDIA_LICENCE = "CC BY-NC 4.0"
NVIDIA_NC_LICENCE = "NVIDIA Source Code License-NC"
UTKFACE_LICENCE = "non-commercial research only (UTKFace)"



class ModelFile(NamedTuple):
    """One file of a model. Unpacks as ``(filename, url, sha256, size)``."""

    filename: str                 # Name on disk, inside the model's cache folder.
    url: Optional[str]            # Preferred source; None when it must be placed by hand.
    sha256: Optional[str]         # Lower-case hex digest, None when nobody has published one.
    size: Optional[int]           # Bytes, None when unknown.


@dataclass
class ModelEntry:
    name: str                                   # Registry key, used on the command line.
    description: str                            # One line for `pulse models list --help` and docs.
    kind: Format                                # The main file's format; the loader refuses a file of another.
    files: List[ModelFile]                      # What `pulse models download NAME` fetches.
    resolution: Optional[int] = None            # Output resolution; None = read it from the file.
    licence: str = ""                           # Short licence string shown in the table.
    notes: str = ""                             # Provenance, what was and was not verified.
    mirrors: Dict[str, Tuple[str, ...]] = field(default_factory=dict)  # filename -> fallback URLs.
    alignment: Optional[str] = None             # 'ffhq' when inputs are framed by FFHQ's recipe, else None.
    domain: str = "faces"                       # What it draws; face detection applies to 'faces' only.
    bundled: bool = False                       # Shipped inside the package (not downloaded).

    def __post_init__(self) -> None:
        if self.kind == "bundled":  # the kind entries once gave the bundled model: a pulse-sr file, shipped
            self.kind, self.bundled = Format.PULSE_SR, True
        try:
            self.kind = _KIND_ALIASES.get(self.kind) or Format(self.kind)
        except ValueError:
            raise ValueError(f"model {self.name!r}: kind must be one of {MODEL_KINDS}, got {self.kind!r}") from None
        self.files = [f if isinstance(f, ModelFile) else ModelFile(*f) for f in self.files]
        if not self.files:
            raise ValueError(f"model {self.name!r} has no files")
        unknown = set(self.mirrors) - {f.filename for f in self.files}
        if unknown:
            raise ValueError(f"model {self.name!r}: mirrors for unknown files {sorted(unknown)}")

    def urls(self, filename: str) -> List[str]:
        """Sources for ``filename``, preferred first."""
        primary = [f.url for f in self.files if f.filename == filename and f.url]
        return primary + list(self.mirrors.get(filename, ()))


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/uc?export=download&id={file_id}"


_NGC_STYLEGAN1 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan1/versions/1/files/"

_UNVERIFIED = ("No sha256 or size has been published for this file, so the download is "
               "not checksum-verified.")

# Shipped in the PULSE repository itself; sha256 and size computed from the git
# blob at adamian98/pulse master (commit 40cacb9).
_PULSE_FIT = ModelFile("gaussian_fit.pt",
                       "https://raw.githubusercontent.com/adamian98/pulse/master/gaussian_fit.pt",
                       "6c638855d24ea56d40512cc6d8e7a6cac4c3db6fec232a0bf58e0f78d6336d16", 4566)

_BUILTIN = [
    ModelEntry(
        name="default",
        description="Small StyleGAN1 face generator trained by pulse-sr, shipped with the package.",
        kind=Format.PULSE_SR,
        bundled=True,
        # sha256 and size of the file shipped in the wheel; `pulse models verify default` re-checks them.
        files=[ModelFile("default.safetensors", None,
                         "b6d215d4ff7573414b28243df1f2bf3c3ebd761f24fe5c6385c31d2e42897a8e", 9118892)],
        resolution=None,
        licence=UTKFACE_LICENCE,
        notes=("Trained on UTKFace, which is released for non-commercial research "
               "purposes only; the weights carry the same restriction."),
    ),
    ModelEntry(
        name="stylegan-ffhq-1024",
        description="NVIDIA's official StyleGAN (v1) FFHQ 1024x1024 generator, TensorFlow pickle.",
        kind=Format.TF_PICKLE,
        files=[ModelFile("karras2019stylegan-ffhq-1024x1024.pkl",
                         _NGC_STYLEGAN1 + "karras2019stylegan-ffhq-1024x1024.pkl", None, None)],
        resolution=1024,
        licence=NVIDIA_LICENCE,
        notes=("The generator PULSE uses (Menon et al. 2020, Sec. 4). Pickle of the "
               "dnnlib networks (_G, _D, Gs); read it with the restricted unpickler, never "
               "plain pickle. Google Drive id 1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ is the one "
               "given in NVlabs/stylegan README.md and pretrained_example.py; the NGC URL "
               "follows NVIDIA's NGC layout and could not be checked from the build machine. "
               + _UNVERIFIED),
        mirrors={"karras2019stylegan-ffhq-1024x1024.pkl": (_drive("1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"),)},
    ),
    ModelEntry(
        name="stylegan-celebahq-1024",
        description="NVIDIA's official StyleGAN (v1) CelebA-HQ 1024x1024 generator, TensorFlow pickle.",
        kind=Format.TF_PICKLE,
        files=[ModelFile("karras2019stylegan-celebahq-1024x1024.pkl",
                         _NGC_STYLEGAN1 + "karras2019stylegan-celebahq-1024x1024.pkl", None, None)],
        resolution=1024,
        licence=NVIDIA_LICENCE,
        notes=("Google Drive id 1MGqJl28pN4t7SAtSrPdSRJSQJqahkzUf is the one given in "
               "NVlabs/stylegan README.md and generate_figures.py; the NGC URL follows the "
               "same layout as the FFHQ file and is unverified. " + _UNVERIFIED),
        mirrors={"karras2019stylegan-celebahq-1024x1024.pkl": (_drive("1MGqJl28pN4t7SAtSrPdSRJSQJqahkzUf"),)},
    ),
    ModelEntry(
        name="pulse-ffhq-1024",
        description="The PULSE authors' PyTorch conversion of StyleGAN FFHQ 1024 (synthesis + mapping).",
        kind=Format.PULSE_STATE_DICT,
        files=[ModelFile("synthesis.pt", _drive("1TCViX1YpQyRsklTVYEJwdbmK91vklCo8"), None, None),
               ModelFile("mapping.pt", _drive("14R6iHGf5iuVx3DMNsACAl7eBr7Vdpd0k"), None, None),
               _PULSE_FIT],
        resolution=1024,
        licence=NVIDIA_LICENCE,
        notes=("Torch state_dicts of G_synthesis and G_mapping, plus PULSE's precomputed "
               "gaussian_fit.pt (the mapping network is only needed to recompute the fit, "
               "PULSE Sec. 3.3). Drive ids from adamian98/pulse PULSE.py. The PULSE "
               "repository has no licence file; the weights derive from NVIDIA's CC BY-NC 4.0 "
               "model. Large Drive files need a confirmation step, handled best-effort. "
               "synthesis.pt and mapping.pt: " + _UNVERIFIED),
    ),
    ModelEntry(
        name="pulse-ffhq-1024-gaussian-fit",
        description="PULSE's Gaussian fit of leaky-ReLU(5)-inverted mapping outputs for FFHQ 1024.",
        kind=Format.GAUSSIAN_FIT,
        files=[_PULSE_FIT],
        resolution=1024,
        licence=NVIDIA_LICENCE,
        notes=("Torch pickle of {'mean', 'std'} (512 each), as computed by PULSE from 1M mapping "
               "samples (Sec. 3.3); also part of pulse-ffhq-1024. sha256 and size were computed "
               "from the git blob at adamian98/pulse master (commit 40cacb9)."),
    ),
]

# NVIDIA's StyleGAN2 / StyleGAN3 pickles for its torch code. URLs as given in
# NVlabs/stylegan3 README.md ("Access individual networks via
# https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan{2,3}/versions/1/files/<MODEL>")
# and NVlabs/stylegan2-ada-pytorch README.md (nvlabs-fi-cdn.nvidia.com); neither
# publishes sizes or checksums. The code is under the NVIDIA Source Code
# License-NC; the training sets carry their own terms (FFHQ: CC BY-NC-SA 4.0,
# MetFaces: CC BY-NC 2.0, AFHQ: CC BY-NC 4.0).
_NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/{}/versions/1/files/{}"
_NVIDIA_DATA = {"ffhq": "FFHQ (CC BY-NC-SA 4.0)", "ffhqu": "unaligned FFHQ (CC BY-NC-SA 4.0)",
                "metfaces": "MetFaces (CC BY-NC 2.0)", "metfacesu": "unaligned MetFaces (CC BY-NC 2.0)",
                "afhqv2": "AFHQv2 cats, dogs and wild animals (CC BY-NC 4.0)",
                "afhqcat": "AFHQ cats (CC BY-NC 4.0)", "afhqdog": "AFHQ dogs (CC BY-NC 4.0)",
                "afhqwild": "AFHQ wild animals (CC BY-NC 4.0)"}


def _nvidia(family: str, data: str, res: int, config: str = "") -> ModelEntry:
    """A registry entry for NVIDIA's ``{family}[-{config}]-{data}-{res}x{res}.pkl`` on NGC."""
    stem = "-".join(x for x in (family, config, data) if x)
    filename = f"{stem}-{res}x{res}.pkl"
    faces = data.startswith(("ffhq", "metfaces"))
    arch = {"stylegan2": "StyleGAN2", "stylegan3": f"StyleGAN3-{config.upper()}"}[family]
    return ModelEntry(
        name=f"{stem}-{res}",
        description=f"NVIDIA's {arch} {_NVIDIA_DATA[data].split(' (')[0]} {res}x{res} generator (torch pickle).",
        kind=Format.NVIDIA_PICKLE,
        files=[ModelFile(filename, _NGC.format(family, filename), None, None)],
        resolution=res,
        licence=NVIDIA_NC_LICENCE,
        notes=(f"Trained on {_NVIDIA_DATA[data]}. A stylegan2-ada-pytorch / stylegan3 snapshot; "
               f"pulse-sr reads it without executing the code it embeds. " + _UNVERIFIED),
        alignment="ffhq" if faces else None,
        domain="faces" if faces else "animals",
    )


_NVIDIA_TORCH = [
    _nvidia("stylegan2", "ffhq", 256), _nvidia("stylegan2", "ffhq", 512), _nvidia("stylegan2", "ffhq", 1024),
    _nvidia("stylegan2", "ffhqu", 256), _nvidia("stylegan2", "metfaces", 1024),
    _nvidia("stylegan2", "afhqcat", 512), _nvidia("stylegan2", "afhqdog", 512),
    _nvidia("stylegan2", "afhqwild", 512),
    _nvidia("stylegan3", "ffhqu", 256, "t"), _nvidia("stylegan3", "ffhqu", 256, "r"),
    _nvidia("stylegan3", "ffhq", 1024, "t"), _nvidia("stylegan3", "ffhq", 1024, "r"),
    _nvidia("stylegan3", "metfacesu", 1024, "t"), _nvidia("stylegan3", "metfacesu", 1024, "r"),
    _nvidia("stylegan3", "afhqv2", 512, "t"), _nvidia("stylegan3", "afhqv2", 512, "r"),
]

_TF_STYLEGAN2 = [
    ModelEntry(
        name="stylegan2-tf-ffhq-1024",
        description="NVIDIA's original StyleGAN2 config-f FFHQ 1024x1024 generator, TensorFlow pickle.",
        kind=Format.TF_PICKLE,
        files=[ModelFile("stylegan2-ffhq-config-f.pkl",
                         "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
                         None, None)],
        resolution=1024,
        licence=NVIDIA_NC_LICENCE,
        notes=("Trained on FFHQ (CC BY-NC-SA 4.0). The CDN folder is the one NVlabs/stylegan2-ada-pytorch "
               "README.md downloads stylegan2-cat-config-f.pkl from; Google Drive id "
               "1Mgh-jglZjgksupF0XLl0KzuOqd1LXcoE is the one NVlabs/stylegan2 README.md gives. " + _UNVERIFIED),
        mirrors={"stylegan2-ffhq-config-f.pkl": (_drive("1Mgh-jglZjgksupF0XLl0KzuOqd1LXcoE"),)},
        alignment="ffhq",
    ),
]

REGISTRY: Dict[str, ModelEntry] = {e.name: e for e in _BUILTIN + _NVIDIA_TORCH + _TF_STYLEGAN2}


def register(entry: ModelEntry, registry: Optional[Dict[str, ModelEntry]] = None,
             replace: bool = False) -> ModelEntry:
    """Add ``entry`` to ``registry`` (the global one by default)."""
    registry = REGISTRY if registry is None else registry
    if entry.name in registry and not replace:
        raise ValueError(f"model {entry.name!r} is already registered; pass replace=True")
    registry[entry.name] = entry
    return entry


def known_names(registry: Optional[Dict[str, ModelEntry]] = None) -> List[str]:
    return sorted(REGISTRY if registry is None else registry)


def get_entry(name: str, registry: Optional[Dict[str, ModelEntry]] = None) -> ModelEntry:
    registry = REGISTRY if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: "
                                f"{', '.join(known_names(registry))} (or give a path to a file)") from None


def model_dir(entry: ModelEntry) -> Path:
    """Folder holding ``entry``'s files: the package's ``models/`` for bundled ones."""
    if entry.bundled:
        return local_path(entry, entry.files[0].filename).parent
    return cache_dir() / entry.name


def local_path(entry: ModelEntry, filename: str) -> Path:
    """Where ``filename`` of ``entry`` is (or will be, once downloaded)."""
    if entry.bundled:
        # Package data, not a subpackage: resolve through the pulse_sr package.
        return Path(str(resources.files("pulse_sr") / "models" / filename))
    return cache_dir() / entry.name / filename


def _present(path: Path, size: Optional[int]) -> bool:
    # Existence and size only: hashing 300 MB on every `models list` is too slow;
    # `pulse models download` and `pulse models verify` re-check the hash.
    return path.is_file() and (size is None or path.stat().st_size == size)


def _usable(entry: ModelEntry, f: ModelFile, path: Path) -> bool:
    # A bundled file comes with the package, not over the network: a size other
    # than the recorded one means a rebuilt model, not a cut-off download, so it
    # is still loaded (the loader rejects a broken file) and `pulse models
    # verify` reports the difference.
    return _present(path, None if entry.bundled else f.size)


def model_status(entry: ModelEntry) -> str:
    """'bundled', 'bundled (modified)', 'bundled (missing)', 'downloaded', 'partial' or 'not downloaded'.

    'bundled (modified)': the bundled file is there but not the size the registry records.
    """
    paths = [(local_path(entry, f.filename), f.size) for f in entry.files]
    present = [_present(p, size) for p, size in paths]
    if entry.bundled:
        if not all(p.is_file() for p, _ in paths):
            return "bundled (missing)"
        return "bundled" if all(present) else "bundled (modified)"
    if all(present):
        return "downloaded"
    if any(present) or any(p.with_name(p.name + ".part").exists() for p, _ in paths):
        return "partial"
    return "not downloaded"


def entry_resolution(entry: ModelEntry) -> Optional[int]:
    """The entry's resolution, read from a present safetensors file when not recorded."""
    if entry.resolution is not None:
        return entry.resolution
    path = local_path(entry, entry.files[0].filename)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        return config_resolution(read_config(path))
    except (PulseError, KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ResolvedModel:
    """The local files of a model, as :func:`resolve_model` finds them."""

    name: str                          # the registry name, or the path as given
    kind: Optional[str]                # the registry's format kind; None for a bare path (the loader sniffs)
    resolution: Optional[int]
    licence: Optional[str]
    entry: Optional["ModelEntry"]      # None for a path
    files: Dict[str, Path]             # {filename: path}, in entry order
    main: Path                         # the generator file (synthesis.pt when there is one)
    mapping: Optional[Path] = None     # PULSE's mapping.pt, when present
    gaussian_fit: Optional[Path] = None  # PULSE's gaussian_fit.pt, when present

    @property
    def paths(self) -> List[Path]:
        return list(self.files.values())

    @property
    def path(self) -> Path:
        return self.paths[0]


def resolve_model(name_or_path, registry: Optional[Dict[str, ModelEntry]] = None) -> ResolvedModel:
    """Local files for a registered name, or an existing file/folder passed through.

    Registered names win over same-named files; write ``./NAME`` to mean a path.

    Raises ModelNotDownloadedError when a registered model is not downloaded yet and
    UnknownModelError for anything else that cannot be found.
    """
    registry = REGISTRY if registry is None else registry
    text = str(name_or_path)
    if text in registry:
        entry = registry[text]
        files = {f.filename: local_path(entry, f.filename) for f in entry.files}
        missing = [f.filename for f in entry.files if not _usable(entry, f, files[f.filename])]
        if missing:
            where = local_path(entry, missing[0])
            if entry.bundled:
                raise ModelNotDownloadedError(f"the bundled model {entry.name!r} is missing ({where}); "
                                              f"reinstall pulse-sr or pass a model file path")
            raise ModelNotDownloadedError(f"model {entry.name!r} is not downloaded ({where} missing or "
                                          f"incomplete); run `pulse models download {entry.name}`")
        return _result(entry.name, entry.kind, entry_resolution(entry), entry.licence, entry, files)

    path = Path(text).expanduser()
    if path.is_file():
        return _result(str(path), None, None, None, None, {path.name: path})
    if path.is_dir():
        files = {p.name: p for p in sorted(path.iterdir()) if p.is_file()}
        if files:
            return _result(str(path), None, None, None, None, files)
        raise UnknownModelError(f"{path}: folder has no files")
    raise UnknownModelError(f"{text!r} is neither a known model nor an existing file; known models: "
                            f"{', '.join(known_names(registry))}")


def _result(name, kind, resolution, licence, entry, files: Dict[str, Path]) -> ResolvedModel:
    # Roles for the loader: PULSE's file names are fixed, so match on them.
    roles = ("mapping.pt", "gaussian_fit.pt")
    rest = [p for f, p in files.items() if f not in roles]
    main = files.get("synthesis.pt") or (rest or list(files.values()))[0]
    return ResolvedModel(name, kind, resolution, licence, entry, files, main, files.get("mapping.pt"),
                         files.get("gaussian_fit.pt"))
