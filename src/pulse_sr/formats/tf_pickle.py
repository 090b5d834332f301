"""NVIDIA's official StyleGAN v1 TensorFlow pickle (``karras2019stylegan-ffhq-1024x1024.pkl``).

Read with a restricted unpickler and stub classes, so TensorFlow is never
imported and no pickled code runs: only allow-listed globals resolve (stubs for
``Network`` and ``EasyDict``, ``OrderedDict``, numpy array reconstruction);
anything else raises :class:`UnsafePickleError`. Variable names are mapped by
pattern, every shape is checked, and a variable left over or a parameter left
unassigned is an error. The networks themselves know nothing about this format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from ..errors import ModelFormatError
from ..networks.stylegan1 import StyleGAN1Config
from . import LoadedWeights
from .infer import build_generator, count_indexed, fit_fmaps, resolution_and_channels
from .keys import check_keys, load_state_strict
from .restricted_pickle import COMMON_GLOBALS, AllowListUnpickler, load_allowed

__all__ = ["load_tf_pickle"]

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


_ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable[[], object]] = {
    ("dnnlib.tflib.network", "Network"): lambda: _TFNetworkStub,
    **COMMON_GLOBALS,
}


class _RestrictedUnpickler(AllowListUnpickler):
    """Unpickler that resolves only the allow-listed globals above."""

    allowed = _ALLOWED_GLOBALS
    allowed_in = "an official StyleGAN pickle"


def _unpickle_restricted(path: Path):
    return load_allowed(path, _RestrictedUnpickler, "StyleGAN pickle")


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
    resolution, channels = resolution_and_channels(
        blocks, lambda: _require(variables, "G_synthesis/4x4/Const/const", what, 4)[1],
        lambda r: _require(variables, f"G_synthesis/{r}x{r}/Conv1/weight", what, 4)[3], what)
    try:
        hint = (float(syn_kw.get("fmap_base", 8192)), float(syn_kw.get("fmap_decay", 1.0)),
                int(syn_kw.get("fmap_max", 512)))
    except (TypeError, ValueError):
        hint = (8192.0, 1.0, 512)  # The shapes decide anyway.
    fmap_base, fmap_decay, fmap_max = fit_fmaps(channels, hint, what)

    n_dense = count_indexed(variables, "G_mapping/Dense{}/weight")
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


def load_tf_pickle(path) -> LoadedWeights:
    """Load Gs from NVIDIA's TF StyleGAN v1 pickle (``karras2019stylegan-ffhq-1024x1024.pkl``) or StyleGAN2 one.

    StyleGAN2 pickles (``G_main``) go to :mod:`.tf_stylegan2`; the rest of this describes v1.

    The pickle holds a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network``
    objects; only allow-listed classes are resolved (stubs for Network and
    EasyDict, OrderedDict, numpy array reconstruction), anything else raises
    :class:`UnsafePickleError`. Returns the generator in eval mode, with the
    official noise maps as ``noise_const{i}`` and ``dlatent_avg`` as ``w_avg``.
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
    if Gs.build_func_name == "G_main":  # NVIDIA's TF StyleGAN2 (stylegan2-ffhq-config-f.pkl and friends)
        from .nvidia_pickle import generator_from_state
        from .tf_stylegan2 import tf_sg2_to_nvidia
        kwargs, state = tf_sg2_to_nvidia(Gs, what)
        G = generator_from_state("stylegan2", kwargs, state, what)
        return LoadedWeights(G, format="tf-stylegan2", metadata={"architecture": "stylegan2"})
    if Gs.build_func_name != "G_style":
        raise ModelFormatError(f"{what}: Gs is built by {Gs.build_func_name!r}, expected StyleGAN v1's "
                               f"'G_style' or StyleGAN2's 'G_main'")
    for role, func in (("mapping", "G_mapping"), ("synthesis", "G_synthesis")):
        comp = Gs.components.get(role)
        if isinstance(comp, _TFNetworkStub) and comp.build_func_name != func:
            raise ModelFormatError(f"{what}: Gs component {role!r} is built by {comp.build_func_name!r}, "
                                   f"expected {func!r}")

    variables = _collect_tf_variables(Gs, what)
    cfg = _infer_tf_config(Gs, variables, what)
    table = _tf_name_table(cfg)
    check_keys(what, variables, table, ignored=_tf_ignored(cfg), noun="variables",
               against=f"a {cfg.resolution}px StyleGAN v1 generator")

    G = build_generator(cfg, what)
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
    return LoadedWeights(G.eval().requires_grad_(False), format="tf-pickle", has_mapping=True)


