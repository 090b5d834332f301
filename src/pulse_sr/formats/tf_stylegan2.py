"""NVIDIA's official StyleGAN2 TensorFlow pickles (``stylegan2-ffhq-config-f.pkl``), converted to NVIDIA's torch layout.

The pickle is a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network`` states,
read with :mod:`.tf_pickle`'s restricted unpickler and stubs (no TensorFlow, no
pickled code runs). Gs is built by ``G_main`` with the components ``mapping``
(``G_mapping``) and ``synthesis`` (``G_synthesis_stylegan2``); its variables
map by pattern onto NVIDIA's torch ``Generator``, which stylegan2-ada-pytorch
wrote to reproduce this network:

* dense and modulation weights are stored [in, out] and convolutions
  [kh, kw, in, out]; torch wants (out, in) and (out, in, kh, kw);
* TF adds 1 to the modulation bias at run time, NVIDIA's torch layer stores it
  added (its bias starts at 1);
* the upsampling convolutions (``Conv0_up``, ``Skip``) are flipped in both
  spatial axes: TF's transposed convolution and torch's use mirrored kernels;
* ``noise{i}`` maps, [1, 1, r, r], lose their batch axes; layer i of the
  synthesis (0 at 4x4, then two per block) reads ``noise{i}``.

Keywords that would make a network NVIDIA's torch generator cannot express
(labels, other nonlinearities, unnormalised latents, ...) are refused by name.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch

from ..errors import ModelFormatError
from .common import Format, check_keys, count_indexed, shape_of
from .stylegan2_layout import (ARCHITECTURES, DEFAULT_FILTER, MAX_MAPPING_LAYERS, check_dim, check_resolution,
                               finish_state, generator_kwargs)
from .tf_network import TFNetworkStub, as_float_tensor, check_static_kwargs, collect_tf_variables, read_networks

__all__ = ["is_tf_stylegan2", "read_tf_stylegan2_pickle", "tf_sg2_to_nvidia"]

FORMAT = Format.TF_STYLEGAN2

# Keywords of G_main / G_mapping / G_synthesis_stylegan2 (and of stylegan2-ada's
# TF port) that only matter while training or for TF itself: precision, graph
# construction, truncation and style mixing are PULSE's business, not the file's.
_RUNTIME_KWARGS = frozenset({
    "truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
    "dlatent_avg_beta", "w_avg_beta", "style_mixing_prob", "is_training", "is_validation",
    "return_dlatents", "is_template_graph", "force_clean_graph", "randomize_noise", "dtype",
    "fused_modconv", "structure", "num_fp16_res"})

# Values the torch generator requires (an absent key takes TF's default, which is this).
_REQUIRED = {"label_size": 0, "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu",
             "normalize_latents": True, "use_noise": True, "mapping_func": "G_mapping",
             "synthesis_func": "G_synthesis_stylegan2"}

# Sizes, checked against the shapes (which decide).
_SIZE_KWARGS = frozenset({"latent_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
                          "mapping_fmaps", "dlatent_broadcast"})

# Used as they are, or as a hint the shapes confirm.
_USED_KWARGS = frozenset({"architecture", "resample_kernel", "mapping_lrmul", "conv_clamp",
                          "fmap_base", "fmap_max", "fmap_min", "fmap_decay"})


def read_tf_stylegan2_pickle(path) -> TFNetworkStub:
    """Gs, the third network of an official StyleGAN2 TF pickle (a (G, D, Gs) tuple), without running code."""
    path = Path(path)
    Gs = read_networks(path)[2]
    if not is_tf_stylegan2(Gs):
        raise ModelFormatError(f"{path}: Gs is built by {Gs.build_func_name!r}, not StyleGAN2's 'G_main'")
    return Gs


def is_tf_stylegan2(gs_stub) -> bool:
    """Whether a TF Network stub is a StyleGAN2 generator (``G_main``) rather than a StyleGAN v1 one (``G_style``)."""
    if not isinstance(gs_stub, TFNetworkStub):
        return False
    try:
        if gs_stub.build_func_name == "G_main":
            return True
        synthesis = gs_stub.components.get("synthesis")
        if isinstance(synthesis, TFNetworkStub) and synthesis.build_func_name == "G_synthesis_stylegan2":
            return True
        nets = [gs_stub] + [c for c in gs_stub.components.values() if isinstance(c, TFNetworkStub)]
        return any(isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                   and item[0].endswith("/mod_weight") for net in nets for item in net.variables)
    except ModelFormatError:
        return False


# ---------------------------------------------------------------------------
# Conversion


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t.t() if t.ndim == 2 else t  # [in, out] -> (out, in)


def _conv(t: torch.Tensor) -> torch.Tensor:
    return t.permute(3, 2, 0, 1) if t.ndim == 4 else t  # [kh, kw, in, out] -> (out, in, kh, kw)


def _conv_up(t: torch.Tensor) -> torch.Tensor:
    return _conv(t.flip(0, 1)) if t.ndim == 4 else t


def _mod_bias(t: torch.Tensor) -> torch.Tensor:
    return t + 1  # TF adds the 1 at run time


def _first(n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def convert(t: torch.Tensor) -> torch.Tensor:
        for _ in range(n):
            if t.ndim == 0 or t.shape[0] != 1:
                return t  # the shape check names it
            t = t[0]
        return t
    return convert


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _name_table(n_mapping: int, log2_res: int, architecture: str) -> Dict[str, Tuple[str, Callable]]:
    """Canonical TF variable name -> (NVIDIA name, tensor conversion)."""
    table: Dict[str, Tuple[str, Callable]] = {"dlatent_avg": ("mapping.w_avg", _same)}
    for i in range(n_mapping):
        table[f"G_mapping/Dense{i}/weight"] = (f"mapping.fc{i}.weight", _dense)
        table[f"G_mapping/Dense{i}/bias"] = (f"mapping.fc{i}.bias", _same)
    table["G_synthesis/4x4/Const/const"] = ("synthesis.b4.const", _first(1))

    layers = [("4x4/Conv", "synthesis.b4.conv1", 0, _conv)]
    for k in range(3, log2_res + 1):
        r = 2 ** k
        layers += [(f"{r}x{r}/Conv0_up", f"synthesis.b{r}.conv0", 2 * k - 5, _conv_up),
                   (f"{r}x{r}/Conv1", f"synthesis.b{r}.conv1", 2 * k - 4, _conv)]
        if architecture == "resnet":
            table[f"G_synthesis/{r}x{r}/Skip/weight"] = (f"synthesis.b{r}.skip.weight", _conv_up)
    for scope, dst, noise, weight in layers:
        src = f"G_synthesis/{scope}"
        table[f"{src}/weight"] = (f"{dst}.weight", weight)
        table[f"{src}/bias"] = (f"{dst}.bias", _same)
        table[f"{src}/mod_weight"] = (f"{dst}.affine.weight", _dense)
        table[f"{src}/mod_bias"] = (f"{dst}.affine.bias", _mod_bias)
        table[f"{src}/noise_strength"] = (f"{dst}.noise_strength", _same)
        table[f"G_synthesis/noise{noise}"] = (f"{dst}.noise_const", _first(2))
    for k in range(2, log2_res + 1):
        if architecture != "skip" and k != log2_res:
            continue
        r = 2 ** k
        src, dst = f"G_synthesis/{r}x{r}/ToRGB", f"synthesis.b{r}.torgb"
        table[f"{src}/weight"] = (f"{dst}.weight", _conv)
        table[f"{src}/bias"] = (f"{dst}.bias", _same)
        table[f"{src}/mod_weight"] = (f"{dst}.affine.weight", _dense)
        table[f"{src}/mod_bias"] = (f"{dst}.affine.bias", _mod_bias)
    return table


def _merged_kwargs(Gs: TFNetworkStub, what: str) -> Tuple[dict, dict]:
    """(mapping, synthesis) keywords: G_main's, overridden by each component's own."""
    comps = Gs.components
    for role, func in (("mapping", "G_mapping"), ("synthesis", "G_synthesis_stylegan2")):
        comp = comps.get(role)
        if comp is None:
            continue
        if not isinstance(comp, TFNetworkStub):
            raise ModelFormatError(f"{what}: Gs component {role!r} is a {type(comp).__name__}, not a Network")
        if comp.build_func_name != func:
            raise ModelFormatError(f"{what}: Gs component {role!r} is built by {comp.build_func_name!r}, "
                                   f"expected {func!r} (StyleGAN2 config E/F)")
    own = {"Gs": Gs.static_kwargs}
    own.update({role: comps[role].static_kwargs for role in ("mapping", "synthesis") if role in comps})
    for label, kw in own.items():  # each on its own: a component's keywords override G_main's
        unknown = sorted(set(kw) - _RUNTIME_KWARGS - set(_REQUIRED) - _SIZE_KWARGS - _USED_KWARGS)
        if unknown:
            raise ModelFormatError(f"{what}: unknown static_kwargs {unknown} in {label}; they may change "
                                   f"the network, so it is not converted")
        check_static_kwargs(f"{what} ({label} static_kwargs)", kw, _REQUIRED)
    map_kw = {**own["Gs"], **own.get("mapping", {})}
    syn_kw = {**own["Gs"], **own.get("synthesis", {})}
    return map_kw, syn_kw


def _number(kw: dict, key: str, default, what: str, low: float, high: float) -> float:
    value = kw.get(key, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ModelFormatError(f"{what}: static_kwargs {key}={kw.get(key)!r} is not a number") from None
    if not (math.isfinite(value) and low < value <= high):
        raise ModelFormatError(f"{what}: static_kwargs {key}={value!r} is out of range ({low}, {high}]")
    return value


def tf_sg2_to_nvidia(gs_stub: TFNetworkStub, what: str = "file") -> Tuple[dict, Dict[str, torch.Tensor]]:
    """Convert the Gs of an official StyleGAN2 TF pickle to NVIDIA's ``Generator`` keywords and state dict.

    Architectures 'skip' (configs E/F, every released generator), 'orig' and
    'resnet' are taken. Sizes come from the variable shapes; the static
    keywords must agree with them.
    """
    if not isinstance(gs_stub, TFNetworkStub):
        raise ModelFormatError(f"{what}: Gs is a {type(gs_stub).__name__}, not a TF Network")
    version = gs_stub.state.get("version")
    if not (isinstance(version, int) and version >= 4):
        raise ModelFormatError(f"{what}: Network pickle version {version!r}; StyleGAN2 pickles are version 4")
    if gs_stub.build_func_name != "G_main":
        raise ModelFormatError(f"{what}: Gs is built by {gs_stub.build_func_name!r}, expected StyleGAN2's 'G_main'")
    map_kw, syn_kw = _merged_kwargs(gs_stub, what)
    variables = collect_tf_variables(gs_stub, what)

    architecture = syn_kw.get("architecture", "skip")
    if architecture not in ARCHITECTURES:
        raise ModelFormatError(f"{what}: unsupported architecture={architecture!r} "
                               f"(expected one of {', '.join(ARCHITECTURES)})")

    n_mapping = count_indexed(variables, "G_mapping/Dense{}/weight")
    if not 1 <= n_mapping <= MAX_MAPPING_LAYERS:
        raise ModelFormatError(f"{what}: {n_mapping} mapping layers (G_mapping/Dense0/weight, ...); "
                               f"expected 1 to {MAX_MAPPING_LAYERS}")
    z_dim, hidden = shape_of(variables, "G_mapping/Dense0/weight", 2, what)
    z_dim = check_dim(what, "the latent (z) width", z_dim, "Dense0/weight")
    hidden = check_dim(what, "the mapping width", hidden, "Dense0/weight")
    last = f"G_mapping/Dense{n_mapping - 1}/weight"
    w_dim = check_dim(what, "the W width", shape_of(variables, last, 2, what)[1], last)

    blocks = [int(m.group(1)) for name in variables for m in [re.match(r"G_synthesis/(\d+)x\1/", name)] if m]
    if not blocks:
        raise ModelFormatError(f"{what}: no synthesis variables like 'G_synthesis/4x4/Const/const' found")
    resolution = check_resolution(what, max(blocks), "the largest synthesis block")
    log2_res = resolution.bit_length() - 1
    const = "G_synthesis/4x4/Const/const"
    channels = {4: check_dim(what, "the 4x4 channels", shape_of(variables, const, 4, what)[1], const)}
    for k in range(3, log2_res + 1):
        name = f"G_synthesis/{2 ** k}x{2 ** k}/Conv1/weight"
        channels[2 ** k] = check_dim(what, f"the {2 ** k}x{2 ** k} channels", shape_of(variables, name, 4, what)[3],
                                     name)
    rgb = f"G_synthesis/{resolution}x{resolution}/ToRGB/weight"
    img_channels = check_dim(what, "the image channels", shape_of(variables, rgb, 4, what)[3], rgb)

    num_ws = 2 * log2_res - 2
    shapes_say = {"latent_size": z_dim, "dlatent_size": w_dim, "resolution": resolution,
                  "num_channels": img_channels, "mapping_layers": n_mapping, "dlatent_broadcast": num_ws}
    if n_mapping > 1:
        shapes_say["mapping_fmaps"] = hidden
    for kw in (gs_stub.static_kwargs, map_kw, syn_kw):
        for key, have in shapes_say.items():
            if kw.get(key) is not None and kw[key] != have:
                raise ModelFormatError(f"{what}: static_kwargs say {key}={kw[key]!r}, but the variables "
                                       f"have {have}")

    taps = syn_kw.get("resample_kernel", list(DEFAULT_FILTER))
    if taps is None:
        raise ModelFormatError(f"{what}: resample_kernel=None (no low-pass filter) is not supported")
    if not (isinstance(taps, (list, tuple)) and 1 <= len(taps) <= 16
            and all(isinstance(t, (int, float)) and math.isfinite(t) for t in taps) and sum(taps) != 0):
        raise ModelFormatError(f"{what}: resample_kernel={taps!r} is not 1 to 16 numbers with a non-zero sum")
    lr = _number(map_kw, "mapping_lrmul", 0.01, what, 0.0, 1000.0)
    conv_clamp = syn_kw.get("conv_clamp")
    if conv_clamp is not None:
        conv_clamp = _number(syn_kw, "conv_clamp", None, what, 0.0, float("inf"))
    hints = []
    try:
        if float(syn_kw.get("fmap_decay", 1.0)) == 1.0:
            hints.append((int(syn_kw.get("fmap_base", 16 << 10)) * 2, int(syn_kw.get("fmap_max", 512))))
    except (TypeError, ValueError):
        pass  # the shapes decide anyway

    kwargs = generator_kwargs(z_dim=z_dim, w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                              channels=channels, mapping_layers=n_mapping, lr_multiplier=lr,
                              layer_features=hidden, architecture=architecture, resample_filter=taps,
                              conv_clamp=conv_clamp, hints=hints)
    table = _name_table(n_mapping, log2_res, architecture)
    check_keys(what, variables, table, ignored={"lod", "G_synthesis/lod"}, noun="variables", limit=8,
               against=f"a {resolution}px StyleGAN2 generator (architecture {architecture!r})")
    state: Dict[str, torch.Tensor] = {}
    sources: Dict[str, str] = {}
    for tf_name, (key, convert) in table.items():
        state[key] = convert(as_float_tensor(variables[tf_name], tf_name, what))
        sources[key] = tf_name
    state = finish_state(what, state, kwargs, against=f"a {resolution}px StyleGAN2 generator", sources=sources)
    return kwargs, state
