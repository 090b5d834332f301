"""Loading StyleGAN v1 weights from the formats they were published in.

Three sources, one function each:

* :func:`load_tf_pickle` -- NVIDIA's official TensorFlow pickle
  (``karras2019stylegan-ffhq-1024x1024.pkl``), read with a restricted unpickler
  and stub classes, so TensorFlow is never imported and no pickled code runs;
* :func:`load_pulse_state_dicts` -- the ``synthesis.pt`` / ``mapping.pt`` state
  dicts that the PULSE repository (adamian98/pulse) converted for its PyTorch port;
* :func:`load_gaussian_fit_pt` -- PULSE's ``gaussian_fit.pt`` (mean and std of
  the leaky-ReLU-inverted W space, paper Sec. 3.3).

:func:`detect_format` tells them, and the project's own safetensors files,
apart by their first bytes. Every loader maps names by pattern, checks every
shape, and fails loudly when a variable is left over or a parameter is left
unassigned. The networks themselves know nothing about these formats.
"""

from __future__ import annotations

import collections
import math
import pickle
import re
import struct
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from .errors import ModelFormatError, UnsafePickleError
from .model_io import load_state_strict
from .networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator

__all__ = [
    "detect_format",
    "load_tf_pickle",
    "load_pulse_state_dicts",
    "load_gaussian_fit_pt",
]

# Seed of the fixed noise maps given to formats that carry none (the PULSE port).
PULSE_NOISE_SEED = 0

# ---------------------------------------------------------------------------
# Format detection

# First bytes of a legacy (pre-zip) torch.save file: a protocol-2 pickle of the
# integer 0x1950a86a20f9469cfc6c that torch writes as its magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def detect_format(path) -> str:
    """Return 'tf-pickle', 'pulse-state-dict' or 'pulse-sr' by sniffing the first bytes.

    * 'pulse-state-dict': a ``torch.save`` file, zip (``PK``) or legacy pickle with
      torch's magic number (``synthesis.pt``, ``mapping.pt``, ``gaussian_fit.pt``);
    * 'tf-pickle': any other pickle (protocol 2+, first byte 0x80);
    * 'pulse-sr': a safetensors file (8-byte little-endian header length, then '{').

    Raises ModelFormatError for unreadable, empty or unrecognised files.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = path.stat().st_size
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise ModelFormatError(f"{path}: empty file, not a model")
    if head.startswith(b"PK\x03\x04"):
        return "pulse-state-dict"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "pulse-state-dict"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return "tf-pickle"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "pulse-sr"
    raise ModelFormatError(
        f"{path}: unrecognised model file (first bytes {head[:8].hex()}); expected an official "
        f"StyleGAN .pkl, a PULSE .pt state dict or a pulse-sr .safetensors file")


# ---------------------------------------------------------------------------
# Restricted unpickling of the official TensorFlow pickle


class _TFNetworkStub:
    """Stands in for ``dnnlib.tflib.network.Network``: keeps the pickled state, builds nothing.

    The real class execs ``build_module_src`` on unpickling; the stub only stores it.
    """

    def __setstate__(self, state) -> None:
        if not isinstance(state, dict):
            raise ModelFormatError(f"Network state is a {type(state).__name__}, expected a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name"))

    @property
    def build_func_name(self) -> str:
        return str(self.state.get("build_func_name"))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs") or {})

    @property
    def components(self) -> dict:
        comps = self.state.get("components") or {}
        if not isinstance(comps, Mapping):
            raise ModelFormatError(f"Network {self.name!r}: components is a {type(comps).__name__}, not a dict")
        return dict(comps)

    @property
    def variables(self) -> list:
        return list(self.state.get("variables") or [])

    def __repr__(self) -> str:
        return f"<Network stub {self.name!r} ({self.build_func_name})>"


class _EasyDictStub(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""


def _numpy_global(name: str):
    # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the
    # old path, so resolve both spellings to whichever module this numpy has.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


_ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable[[], object]] = {
    ("dnnlib.tflib.network", "Network"): lambda: _TFNetworkStub,
    ("dnnlib.util", "EasyDict"): lambda: _EasyDictStub,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals above."""

    def find_class(self, module: str, name: str):
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"pickle asks for {module}.{name}, which is not on the allow-list of an official "
                f"StyleGAN pickle; refusing to load it")
        return factory()


def _unpickle_restricted(path: Path):
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on corrupt data
        raise ModelFormatError(
            f"{path}: not a readable StyleGAN pickle ({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------
# Official TensorFlow pickle


def _check_kwargs(what: str, kwargs: dict, required: Mapping[str, object]) -> None:
    """Refuse static_kwargs that select an architecture variant StyleGAN1Generator lacks."""
    bad = []
    for key, want in required.items():
        if key not in kwargs:
            continue
        have = kwargs[key]
        if isinstance(want, bool):
            same = bool(have) == want  # use_noise may be stored as 1/True.
        elif isinstance(want, list):
            same = isinstance(have, (list, tuple)) and list(have) == want
        else:
            same = have == want
        if not same:
            bad.append(f"{key}={have!r} (need {want!r})")
    if bad:
        raise ModelFormatError(f"{what}: unsupported architecture options: {', '.join(bad)}")


def _resolution_and_channels(blocks, const_channels, conv1_channels, what: str) -> Tuple[int, Dict[int, int]]:
    """Resolution from the block sizes found, and feature maps per stage.

    ``const_channels()`` reads the 4x4 constant's channels and
    ``conv1_channels(r)`` the output channels of block r's second conv.
    """
    resolution = max(blocks)
    log2 = int(round(math.log2(resolution)))
    if resolution != 2 ** log2 or not 8 <= resolution <= 1024:
        raise ModelFormatError(f"{what}: resolution {resolution} is not a power of two in [8, 1024]")
    channels = {1: const_channels()}
    for s in range(2, log2):
        channels[s] = conv1_channels(2 ** (s + 1))
    return resolution, channels


def _fit_fmaps(channels: Dict[int, int], hint: Tuple[float, float, int], what: str) -> Tuple[int, float, int]:
    """Find (fmap_base, fmap_decay, fmap_max) such that ``nf(stage)`` gives ``channels``.

    ``hint`` (from the pickle's static kwargs, or the defaults) is tried first.
    """
    def reproduces(base, decay, fmax):
        return all(min(int(base / (2.0 ** (s * decay))), fmax) == c for s, c in channels.items())

    fmax = max(channels.values())
    last = max(channels)
    candidates = [hint]
    candidates += [(c * 2 ** s, 1.0, fmax) for s, c in sorted(channels.items())]
    candidates += [(fmax * 2 ** last, 1.0, fmax), (fmax, 0.0, fmax)]
    for base, decay, top in candidates:
        if reproduces(base, decay, top):
            return int(base), float(decay), int(top)
    raise ModelFormatError(f"{what}: channel counts per stage {dict(sorted(channels.items()))} "
                           f"do not follow min(fmap_base / 2**(stage * fmap_decay), fmap_max)")


def _as_float_tensor(value, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).clone()
    if isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(np.asarray(value).dtype, np.number):
        return torch.from_numpy(np.array(value, dtype=np.float32))
    raise ModelFormatError(f"{what}: variable {name} is a {type(value).__name__}, not a numeric array")


def _collect_tf_variables(Gs: _TFNetworkStub, what: str) -> Dict[str, np.ndarray]:
    """All of Gs's variables under canonical names: 'G_mapping/...', 'G_synthesis/...', or Gs-own.

    The official pickle keeps each component's variables in the component, named
    relative to it ('Dense0/weight'); other writers flatten them into Gs with or
    without the component scope. All three layouts end up the same here.
    """
    role_prefix = {"mapping": "G_mapping/", "synthesis": "G_synthesis/"}
    scope_to_prefix = {"G_mapping": "G_mapping/", "G_synthesis": "G_synthesis/"}
    comps = Gs.components
    for role, comp in comps.items():
        if role in role_prefix and isinstance(comp, _TFNetworkStub):
            scope_to_prefix[comp.name] = role_prefix[role]

    out: Dict[str, np.ndarray] = {}

    def put(name: str, value) -> None:
        if name in out:
            if np.shape(out[name]) != np.shape(value) or not np.array_equal(out[name], value):
                raise ModelFormatError(f"{what}: variable {name} appears twice with different values")
            return
        out[name] = value

    def entries(net: _TFNetworkStub, label: str) -> Iterable[Tuple[str, object]]:
        for item in net.variables:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise ModelFormatError(f"{what}: {label} has a malformed variables entry {item!r:.80}")
            yield item[0], item[1]

    for role, prefix in role_prefix.items():
        comp = comps.get(role)
        if comp is None:
            continue
        if not isinstance(comp, _TFNetworkStub):
            raise ModelFormatError(f"{what}: Gs component {role!r} is a {type(comp).__name__}, not a Network")
        for name, value in entries(comp, f"component {role!r}"):
            put(prefix + name, value)

    for name, value in entries(Gs, "Gs"):
        if name.startswith(Gs.name + "/"):
            name = name[len(Gs.name) + 1:]
        scope, _, rest = name.partition("/")
        if rest and scope in scope_to_prefix:
            put(scope_to_prefix[scope] + rest, value)
        elif re.match(r"(Dense\d+|LabelConcat)/", name):
            put("G_mapping/" + name, value)
        elif re.match(r"(\d+x\d+/|ToRGB_lod\d+/|noise\d+$)", name):
            put("G_synthesis/" + name, value)
        else:
            put(name, value)  # Gs's own: dlatent_avg, lod.
    return out


def _tf_synthesis_scopes(cfg: StyleGAN1Config) -> List[str]:
    """TF scope of each synthesis layer, in StyleGAN1Generator's layer order."""
    scopes = ["4x4/Const", "4x4/Conv"]
    for log2 in range(3, cfg.resolution_log2 + 1):
        r = 2 ** log2
        scopes += [f"{r}x{r}/Conv0_up", f"{r}x{r}/Conv1"]
    return scopes


# Layout conversions from TF to torch.
def _conv_tf_to_torch(t: torch.Tensor) -> torch.Tensor:
    return t.permute(3, 2, 0, 1)  # [kh, kw, in, out] -> (out, in, kh, kw)


def _dense_tf_to_torch(t: torch.Tensor) -> torch.Tensor:
    return t.t()  # [in, out] -> (out, in)


def _tf_name_table(cfg: StyleGAN1Config) -> Dict[str, Tuple[str, Optional[Callable]]]:
    """TF variable name -> (StyleGAN1Generator state-dict key, layout conversion or None)."""
    table: Dict[str, Tuple[str, Optional[Callable]]] = {}
    for i in range(cfg.mapping_layers):
        table[f"G_mapping/Dense{i}/weight"] = (f"mapping_network.layers.{i}.weight", _dense_tf_to_torch)
        table[f"G_mapping/Dense{i}/bias"] = (f"mapping_network.layers.{i}.bias", None)
    for i, scope in enumerate(_tf_synthesis_scopes(cfg)):
        tf, pt = f"G_synthesis/{scope}", f"synthesis.layers.{i}"
        if i == 0:
            table[f"{tf}/const"] = (f"{pt}.const", None)
        else:
            table[f"{tf}/weight"] = (f"{pt}.weight", _conv_tf_to_torch)
        table[f"{tf}/bias"] = (f"{pt}.bias", None)
        table[f"{tf}/Noise/weight"] = (f"{pt}.noise_strength", None)
        table[f"{tf}/StyleMod/weight"] = (f"{pt}.style.weight", _dense_tf_to_torch)
        table[f"{tf}/StyleMod/bias"] = (f"{pt}.style.bias", None)
        table[f"G_synthesis/noise{i}"] = (f"synthesis.noise_const{i}", None)
    table["G_synthesis/ToRGB_lod0/weight"] = ("synthesis.torgb.weight", _conv_tf_to_torch)
    table["G_synthesis/ToRGB_lod0/bias"] = ("synthesis.torgb.bias", None)
    table["dlatent_avg"] = ("w_avg", None)
    return table


def _tf_ignored(cfg: StyleGAN1Config) -> set:
    """Variables of the official pickle that the generator does not need."""
    ignored = {"lod", "G_synthesis/lod"}  # Progressive-growing level of detail, 0 when done.
    for lod in range(1, cfg.resolution_log2 - 1):  # ToRGB of the coarser growing stages.
        ignored |= {f"G_synthesis/ToRGB_lod{lod}/weight", f"G_synthesis/ToRGB_lod{lod}/bias"}
    return ignored


def _require(variables: Mapping[str, object], name: str, what: str, ndim: int):
    if name not in variables:
        raise ModelFormatError(f"{what}: missing variable {name} (needed to infer the architecture)")
    shape = np.shape(variables[name])
    if len(shape) != ndim:
        raise ModelFormatError(f"{what}: variable {name} has shape {shape}, expected {ndim} dimensions")
    return shape


def _infer_tf_config(Gs: _TFNetworkStub, variables: Mapping[str, object], what: str) -> StyleGAN1Config:
    comps = Gs.components
    syn_kw = {**Gs.static_kwargs, **(comps["synthesis"].static_kwargs if "synthesis" in comps else {})}
    map_kw = {**Gs.static_kwargs, **(comps["mapping"].static_kwargs if "mapping" in comps else {})}
    _check_kwargs(what + " (synthesis)", syn_kw, {
        "use_styles": True, "const_input_layer": True, "use_noise": True, "nonlinearity": "lrelu",
        "use_wscale": True, "use_pixel_norm": False, "use_instance_norm": True, "blur_filter": [1, 2, 1]})
    _check_kwargs(what + " (mapping)", map_kw, {
        "label_size": 0, "mapping_nonlinearity": "lrelu", "use_wscale": True, "normalize_latents": True})

    blocks = [int(m.group(1)) for name in variables
              for m in [re.match(r"G_synthesis/(\d+)x\1/", name)] if m]
    if not blocks:
        raise ModelFormatError(f"{what}: no synthesis variables like 'G_synthesis/4x4/Const/const' found")
    if "resolution" in syn_kw and int(syn_kw["resolution"]) != max(blocks):
        raise ModelFormatError(f"{what}: static_kwargs say resolution {syn_kw['resolution']} "
                               f"but the largest block is {max(blocks)}x{max(blocks)}")
    resolution, channels = _resolution_and_channels(
        blocks, lambda: _require(variables, "G_synthesis/4x4/Const/const", what, 4)[1],
        lambda r: _require(variables, f"G_synthesis/{r}x{r}/Conv1/weight", what, 4)[3], what)
    try:
        hint = (float(syn_kw.get("fmap_base", 8192)), float(syn_kw.get("fmap_decay", 1.0)),
                int(syn_kw.get("fmap_max", 512)))
    except (TypeError, ValueError):
        hint = (8192.0, 1.0, 512)  # The shapes decide anyway.
    fmap_base, fmap_decay, fmap_max = _fit_fmaps(channels, hint, what)

    n_dense = 0
    while f"G_mapping/Dense{n_dense}/weight" in variables:
        n_dense += 1
    if n_dense == 0:
        raise ModelFormatError(f"{what}: missing variable G_mapping/Dense0/weight (no mapping network found)")
    latent_dim, fmaps = _require(variables, "G_mapping/Dense0/weight", what, 2)
    w_dim = _require(variables, f"G_mapping/Dense{n_dense - 1}/weight", what, 2)[1]
    num_channels = _require(variables, "G_synthesis/ToRGB_lod0/weight", what, 4)[3]

    fused = syn_kw.get("fused_scale", "auto")
    # 'auto' fuses from 128 px up (official upscale2d_conv2d); True always; False never.
    fused_min = {"auto": 128, True: 8, False: 2048}.get(fused) if isinstance(fused, (str, bool)) else None
    if fused_min is None:
        raise ModelFormatError(f"{what}: unsupported fused_scale={fused!r}")
    try:
        return StyleGAN1Config(
            resolution=resolution, latent_dim=int(latent_dim), w_dim=int(w_dim), mapping_layers=n_dense,
            mapping_fmaps=int(fmaps) if n_dense > 1 else 512,
            mapping_lrmul=float(map_kw.get("mapping_lrmul", 0.01)),
            fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max, num_channels=int(num_channels),
            fused_scale_min_res=fused_min, instance_norm_eps=1e-8)  # Official TF epsilon.
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{what}: cannot build a config ({exc})") from exc


def load_tf_pickle(path) -> StyleGAN1Generator:
    """Load Gs from NVIDIA's official StyleGAN v1 pickle, e.g. ``karras2019stylegan-ffhq-1024x1024.pkl``.

    The pickle holds a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network``
    objects; only allow-listed classes are resolved (stubs for Network and
    EasyDict, OrderedDict, numpy array reconstruction), anything else raises
    :class:`UnsafePickleError`. Returns the generator in eval mode with
    ``has_mapping = True``, the official noise maps as ``noise_const{i}`` and
    ``dlatent_avg`` as ``w_avg``.
    """
    path = Path(path)
    what = str(path)
    obj = _unpickle_restricted(path)
    if not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, _TFNetworkStub) for n in obj)):
        raise ModelFormatError(f"{what}: expected a pickled (G, D, Gs) tuple of Networks, "
                               f"got {type(obj).__name__}")
    Gs = obj[2]
    if Gs.state.get("version") not in (2, 3, 4):
        raise ModelFormatError(f"{what}: unknown Network pickle version {Gs.state.get('version')!r}")
    if Gs.build_func_name != "G_style":
        raise ModelFormatError(f"{what}: Gs is built by {Gs.build_func_name!r}, expected StyleGAN v1's "
                               f"'G_style' (StyleGAN2 pickles are not supported)")
    for role, func in (("mapping", "G_mapping"), ("synthesis", "G_synthesis")):
        comp = Gs.components.get(role)
        if isinstance(comp, _TFNetworkStub) and comp.build_func_name != func:
            raise ModelFormatError(f"{what}: Gs component {role!r} is built by {comp.build_func_name!r}, "
                                   f"expected {func!r}")

    variables = _collect_tf_variables(Gs, what)
    cfg = _infer_tf_config(Gs, variables, what)
    table = _tf_name_table(cfg)
    unknown = sorted(set(variables) - set(table) - _tf_ignored(cfg))
    missing = sorted(set(table) - set(variables))
    if unknown or missing:
        parts = ([f"missing variables {missing}"] if missing else []) + (
            [f"unknown variables {unknown}"] if unknown else [])
        raise ModelFormatError(f"{what}: does not match a {cfg.resolution}px StyleGAN v1 generator: "
                               + "; ".join(parts))

    G = StyleGAN1Generator(cfg)
    own = G.state_dict()
    state = {}
    for tf_name, (key, convert) in table.items():
        t = _as_float_tensor(variables[tf_name], tf_name, what)
        want = tuple(own[key].shape)
        if convert is not None and t.ndim == len(want):  # else the shape check below reports it
            t = convert(t)
        if tuple(t.shape) != want:
            raise ModelFormatError(f"{what}: variable {tf_name} has shape {tuple(t.shape)} "
                                   f"(in torch layout), expected {want} for {key}")
        state[key] = t.contiguous()
    load_state_strict(G, state, what)
    G.has_mapping = True
    G.eval().requires_grad_(False)
    return G


# ---------------------------------------------------------------------------
# PULSE's converted torch state dicts


def _torch_load_weights(path: Path):
    """``torch.load(weights_only=True)`` with its failures turned into our error types."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        # torch names the refused global as 'GLOBAL module.name' (or 'Unsupported class' before 2.4).
        m = re.search(r"(?:GLOBAL|Unsupported class)\s+([\w.]+)", msg)
        if m:
            raise UnsafePickleError(f"{path}: refusing to load: the file asks for {m.group(1)}, "
                                    f"which is not allowed in a weights file") from exc
        lines = [line.strip() for line in msg.splitlines()
                 if line.strip() and not line.startswith("Check the documentation")]
        detail = lines[-1] if lines else "corrupt pickle"
        raise ModelFormatError(f"{path}: not a readable torch weights file ({detail.strip()[:200]})") from exc
    except Exception as exc:  # RuntimeError (bad zip), EOFError (truncated), ...
        raise ModelFormatError(f"{path}: not a readable torch weights file "
                               f"({type(exc).__name__}: {str(exc)[:200]})") from exc


def _tensor_dict(obj, path: Path) -> Dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{path}: expected a state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise ModelFormatError(f"{path}: state dict entries that are not tensors: {bad[:5]}")
    return dict(obj)


def _key_shape(sd: Mapping[str, torch.Tensor], key: str, what: str, ndim: int) -> Tuple[int, ...]:
    if key not in sd:
        raise ModelFormatError(f"{what}: missing key {key} (needed to infer the architecture)")
    shape = tuple(sd[key].shape)
    if len(shape) != ndim:
        raise ModelFormatError(f"{what}: {key} has shape {shape}, expected {ndim} dimensions")
    return shape


def _pulse_block_names(cfg: StyleGAN1Config) -> List[Tuple[str, str, str]]:
    """(block, conv module, epilogue module) of the reference port for each synthesis layer."""
    layers = [("4x4", "", "epi1"), ("4x4", "conv", "epi2")]
    for log2 in range(3, cfg.resolution_log2 + 1):
        r = 2 ** log2
        layers += [(f"{r}x{r}", "conv0_up", "epi1"), (f"{r}x{r}", "conv1", "epi2")]
    return layers


def _pulse_synthesis_table(cfg: StyleGAN1Config) -> Dict[str, str]:
    """Reference ``G_synthesis`` state-dict key -> StyleGAN1Generator key (layouts already match)."""
    table = {}
    for i, (block, conv, epi) in enumerate(_pulse_block_names(cfg)):
        ref, pt = f"blocks.{block}", f"synthesis.layers.{i}"
        if i == 0:
            # The reference adds its 4x4 bias to the const before the epilogue;
            # the sum is the same as ours adding it after the noise.
            table[f"{ref}.const"] = f"{pt}.const"
            table[f"{ref}.bias"] = f"{pt}.bias"
        else:
            # The reference adds the conv bias before the noise; addition commutes.
            table[f"{ref}.{conv}.weight"] = f"{pt}.weight"
            table[f"{ref}.{conv}.bias"] = f"{pt}.bias"
        table[f"{ref}.{epi}.noise.weight"] = f"{pt}.noise_strength"
        table[f"{ref}.{epi}.style_mod.lin.weight"] = f"{pt}.style.weight"
        table[f"{ref}.{epi}.style_mod.lin.bias"] = f"{pt}.style.bias"
    table["torgb.weight"] = "synthesis.torgb.weight"
    table["torgb.bias"] = "synthesis.torgb.bias"
    return table


def _pulse_blur_keys(cfg: StyleGAN1Config) -> List[str]:
    return [f"blocks.{2 ** k}x{2 ** k}.conv0_up.intermediate.kernel" for k in range(3, cfg.resolution_log2 + 1)]


def _check_blur_kernel(sd: Mapping[str, torch.Tensor], key: str, what: str) -> None:
    # The generator hard-codes the [1,2,1] blur; a file with another kernel would silently differ.
    k = torch.tensor([1.0, 2.0, 1.0])
    want = (k[:, None] * k[None, :] / 16.0)[None, None]
    have = sd[key]
    if tuple(have.shape) != (1, 1, 3, 3) or not torch.allclose(have.float(), want, atol=1e-6):
        raise ModelFormatError(f"{what}: {key} is not the [1,2,1] blur kernel the generator uses")


def load_pulse_state_dicts(synthesis_path, mapping_path=None) -> StyleGAN1Generator:
    """Load PULSE's converted ``synthesis.pt`` (and optionally ``mapping.pt``).

    The files are state dicts of the PULSE PyTorch port (a port of the
    lernapparat converter); tensor layouts already match ours. That port uses
    ``nn.InstanceNorm2d`` (epsilon 1e-5, not the official 1e-8), so the config
    gets ``instance_norm_eps=1e-5`` to reproduce its outputs.

    The port stores no noise maps and no average W: ``noise_const{i}`` are
    drawn from a generator seeded with ``PULSE_NOISE_SEED`` and ``w_avg`` is
    zero. Without ``mapping_path`` the mapping network keeps its random
    initialisation and ``G.has_mapping`` is False.
    """
    syn_path = Path(synthesis_path)
    what = str(syn_path)
    sd = _tensor_dict(_torch_load_weights(syn_path), syn_path)
    msd = None
    if mapping_path is not None:
        map_path = Path(mapping_path)
        msd = _tensor_dict(_torch_load_weights(map_path), map_path)

    # Architecture from the key names and shapes.
    blocks = [int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)x\1\.", k)] if m]
    if not blocks:
        raise ModelFormatError(f"{what}: no keys like 'blocks.4x4.const'; not a PULSE synthesis.pt")
    resolution, channels = _resolution_and_channels(
        blocks, lambda: _key_shape(sd, "blocks.4x4.const", what, 4)[1],
        lambda r: _key_shape(sd, f"blocks.{r}x{r}.conv1.weight", what, 4)[0], what)
    fmap_base, fmap_decay, fmap_max = _fit_fmaps(channels, (8192, 1.0, 512), what)
    w_dim = _key_shape(sd, "blocks.4x4.epi1.style_mod.lin.weight", what, 2)[1]
    num_channels = _key_shape(sd, "torgb.weight", what, 4)[0]

    latent_dim, n_dense, fmaps = 512, 8, 512
    if msd is not None:
        mwhat = str(mapping_path)
        n_dense = 0
        while f"dense{n_dense}.weight" in msd:
            n_dense += 1
        if n_dense == 0:
            raise ModelFormatError(f"{mwhat}: missing key dense0.weight; not a PULSE mapping.pt")
        fmaps, latent_dim = _key_shape(msd, "dense0.weight", mwhat, 2)
        map_w_dim = _key_shape(msd, f"dense{n_dense - 1}.weight", mwhat, 2)[0]
        if map_w_dim != w_dim:
            raise ModelFormatError(f"{mwhat}: mapping outputs {map_w_dim}-d W but {what} expects {w_dim}-d")
        if n_dense == 1:
            fmaps = 512

    try:
        cfg = StyleGAN1Config(
            resolution=resolution, latent_dim=int(latent_dim), w_dim=int(w_dim), mapping_layers=n_dense,
            mapping_fmaps=int(fmaps), mapping_lrmul=0.01, fmap_base=fmap_base, fmap_decay=fmap_decay,
            fmap_max=fmap_max, num_channels=int(num_channels),
            fused_scale_min_res=128,  # The port fuses when the output is >= 128 px, as TF's 'auto'.
            instance_norm_eps=1e-5)   # nn.InstanceNorm2d default, see docstring.
    except ValueError as exc:
        raise ModelFormatError(f"{what}: {exc}") from exc

    table = _pulse_synthesis_table(cfg)
    blur_keys = _pulse_blur_keys(cfg)
    missing = sorted(set(table) - set(sd)) + sorted(set(blur_keys) - set(sd))
    unknown = sorted(set(sd) - set(table) - set(blur_keys))
    if missing or unknown:
        parts = ([f"missing keys {missing}"] if missing else []) + (
            [f"unknown keys {unknown}"] if unknown else [])
        raise ModelFormatError(f"{what}: does not match a {resolution}px PULSE synthesis network: "
                               + "; ".join(parts))
    for key in blur_keys:
        _check_blur_kernel(sd, key, what)
    state = {ours: sd[ref].detach().float() for ref, ours in table.items()}

    G = StyleGAN1Generator(cfg)
    if msd is not None:
        mwhat = str(mapping_path)
        mtable = {}
        for i in range(n_dense):
            mtable[f"dense{i}.weight"] = f"mapping_network.layers.{i}.weight"
            mtable[f"dense{i}.bias"] = f"mapping_network.layers.{i}.bias"
        missing = sorted(set(mtable) - set(msd))
        unknown = sorted(set(msd) - set(mtable))
        if missing or unknown:
            parts = ([f"missing keys {missing}"] if missing else []) + (
                [f"unknown keys {unknown}"] if unknown else [])
            raise ModelFormatError(f"{mwhat}: does not match a PULSE mapping network: " + "; ".join(parts))
        state.update({ours: msd[ref].detach().float() for ref, ours in mtable.items()})
    else:
        own = G.state_dict()
        state.update({k: v for k, v in own.items() if k.startswith("mapping_network.")})

    gen = torch.Generator().manual_seed(PULSE_NOISE_SEED)
    for i, r in enumerate(G.noise_resolutions):
        state[f"synthesis.noise_const{i}"] = torch.randn(1, 1, r, r, generator=gen)
    state["w_avg"] = torch.zeros(cfg.w_dim)

    load_state_strict(G, state, what if msd is None else f"{what} + {mapping_path}")
    G.has_mapping = msd is not None
    G.eval().requires_grad_(False)
    return G


def load_gaussian_fit_pt(path, dim: Optional[int] = 512) -> Dict[str, torch.Tensor]:
    """Read PULSE's ``gaussian_fit.pt``: ``{'mean': (dim,), 'std': (dim,)}`` as float32.

    These are the statistics of leaky_relu(W, 5) that PULSE's spherical prior
    uses (paper Sec. 3.3). Pass ``dim=None`` to accept any length.
    """
    path = Path(path)
    obj = _torch_load_weights(path)
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{path}: expected a dict with 'mean' and 'std', got {type(obj).__name__}")
    missing = [k for k in ("mean", "std") if k not in obj]
    unknown = sorted(str(k) for k in obj if k not in ("mean", "std"))
    if missing or unknown:
        raise ModelFormatError(f"{path}: not a Gaussian fit: missing keys {missing}, unknown keys {unknown}")
    out = {}
    for k in ("mean", "std"):
        v = obj[k]
        if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.ndim != 1:
            raise ModelFormatError(f"{path}: {k!r} must be a 1-D float tensor, got "
                                   f"{type(v).__name__} {tuple(getattr(v, 'shape', ()))}")
        if dim is not None and v.shape[0] != dim:
            raise ModelFormatError(f"{path}: {k!r} has shape {tuple(v.shape)}, expected ({dim},)")
        out[k] = v.detach().float().clone()
    if out["mean"].shape != out["std"].shape:
        raise ModelFormatError(f"{path}: 'mean' {tuple(out['mean'].shape)} and 'std' "
                               f"{tuple(out['std'].shape)} differ in shape")
    if not (torch.isfinite(out["mean"]).all() and torch.isfinite(out["std"]).all() and (out["std"] > 0).all()):
        raise ModelFormatError(f"{path}: Gaussian fit has non-finite values or a non-positive std")
    return out
