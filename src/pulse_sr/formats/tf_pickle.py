"""NVIDIA's official StyleGAN v1 TensorFlow pickle (``karras2019stylegan-ffhq-1024x1024.pkl``).

Read through :mod:`.tf_network` (a restricted unpickler and stub classes: no
TensorFlow, no pickled code). A pickle whose Gs is StyleGAN2's ``G_main`` goes
to :mod:`.tf_stylegan2`. Variable names are mapped by pattern, every shape is
checked, and a variable left over or a parameter left unassigned is an error.
The networks themselves know nothing about this format.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import ModelFormatError
from ..networks.stylegan1 import StyleGAN1Config
from .common import Format, LoadedWeights, build_checked, check_keys, count_indexed, load_state_strict, shape_of
from .infer import fit_fmaps, resolution_and_channels
from .tf_network import TFNetworkStub, as_float_tensor, check_static_kwargs, collect_tf_variables, read_networks
from .tf_stylegan2 import tf_sg2_to_nvidia
from .nvidia_generators import generator_from_state

__all__ = ["load_tf_pickle"]

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


def _infer_tf_config(Gs: TFNetworkStub, variables: Mapping[str, object], what: str) -> StyleGAN1Config:
    comps = Gs.components
    syn_kw = {**Gs.static_kwargs, **(comps["synthesis"].static_kwargs if "synthesis" in comps else {})}
    map_kw = {**Gs.static_kwargs, **(comps["mapping"].static_kwargs if "mapping" in comps else {})}
    check_static_kwargs(what + " (synthesis)", syn_kw, {
        "use_styles": True, "const_input_layer": True, "use_noise": True, "nonlinearity": "lrelu",
        "use_wscale": True, "use_pixel_norm": False, "use_instance_norm": True, "blur_filter": [1, 2, 1]})
    check_static_kwargs(what + " (mapping)", map_kw, {
        "label_size": 0, "mapping_nonlinearity": "lrelu", "use_wscale": True, "normalize_latents": True})

    blocks = [int(m.group(1)) for name in variables
              for m in [re.match(r"G_synthesis/(\d+)x\1/", name)] if m]
    if not blocks:
        raise ModelFormatError(f"{what}: no synthesis variables like 'G_synthesis/4x4/Const/const' found")
    if "resolution" in syn_kw and int(syn_kw["resolution"]) != max(blocks):
        raise ModelFormatError(f"{what}: static_kwargs say resolution {syn_kw['resolution']} "
                               f"but the largest block is {max(blocks)}x{max(blocks)}")
    resolution, channels = resolution_and_channels(
        blocks, lambda: shape_of(variables, "G_synthesis/4x4/Const/const", 4, what)[1],
        lambda r: shape_of(variables, f"G_synthesis/{r}x{r}/Conv1/weight", 4, what)[3], what)
    try:
        hint = (float(syn_kw.get("fmap_base", 8192)), float(syn_kw.get("fmap_decay", 1.0)),
                int(syn_kw.get("fmap_max", 512)))
    except (TypeError, ValueError):
        hint = (8192.0, 1.0, 512)  # The shapes decide anyway.
    fmap_base, fmap_decay, fmap_max = fit_fmaps(channels, hint, what)

    n_dense = count_indexed(variables, "G_mapping/Dense{}/weight")
    if n_dense == 0:
        raise ModelFormatError(f"{what}: missing variable G_mapping/Dense0/weight (no mapping network found)")
    latent_dim, fmaps = shape_of(variables, "G_mapping/Dense0/weight", 2, what)
    w_dim = shape_of(variables, f"G_mapping/Dense{n_dense - 1}/weight", 2, what)[1]
    num_channels = shape_of(variables, "G_synthesis/ToRGB_lod0/weight", 4, what)[3]

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
    Gs = read_networks(path)[2]
    if Gs.build_func_name == "G_main":  # NVIDIA's TF StyleGAN2 (stylegan2-ffhq-config-f.pkl and friends)
        kwargs, state = tf_sg2_to_nvidia(Gs, what)
        G = generator_from_state("stylegan2", kwargs, state, what)
        return LoadedWeights(G, format=Format.TF_STYLEGAN2, metadata={"architecture": "stylegan2"})
    if Gs.build_func_name != "G_style":
        raise ModelFormatError(f"{what}: Gs is built by {Gs.build_func_name!r}, expected StyleGAN v1's "
                               f"'G_style' or StyleGAN2's 'G_main'")
    for role, func in (("mapping", "G_mapping"), ("synthesis", "G_synthesis")):
        comp = Gs.components.get(role)
        if isinstance(comp, TFNetworkStub) and comp.build_func_name != func:
            raise ModelFormatError(f"{what}: Gs component {role!r} is built by {comp.build_func_name!r}, "
                                   f"expected {func!r}")

    variables = collect_tf_variables(Gs, what)
    cfg = _infer_tf_config(Gs, variables, what)
    table = _tf_name_table(cfg)
    check_keys(what, variables, table, ignored=_tf_ignored(cfg), noun="variables",
               against=f"a {cfg.resolution}px StyleGAN v1 generator")

    G = build_checked(cfg, what)
    own = G.state_dict()
    state = {}
    for tf_name, (key, convert) in table.items():
        t = as_float_tensor(variables[tf_name], tf_name, what)
        want = tuple(own[key].shape)
        if convert is not None and t.ndim == len(want):  # else the shape check below reports it
            t = convert(t)
        if tuple(t.shape) != want:
            raise ModelFormatError(f"{what}: variable {tf_name} has shape {tuple(t.shape)} "
                                   f"(in torch layout), expected {want} for {key}")
        state[key] = t.contiguous()
    load_state_strict(G, state, what)
    return LoadedWeights(G.eval().requires_grad_(False), format=Format.TF_PICKLE, has_mapping=True)


