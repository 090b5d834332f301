"""rosinality/stylegan2-pytorch checkpoints, converted to NVIDIA's torch layout.

Two kinds of ``.pt`` file are in circulation:

* ``convert_weight.py`` output (NVIDIA's TF pickles converted):
  ``{"g_ema": state_dict, "latent_avg": tensor}``, optionally with ``"g"`` and ``"d"``;
* ``train.py`` snapshots: ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}``,
  where ``args`` is the ``argparse.Namespace`` of the run (and no ``latent_avg``).

Both are read with ``torch.load(weights_only=True)``, allowing exactly
``argparse.Namespace`` besides tensors and plain containers, so nothing in the
file can run code. :func:`rosinality_to_nvidia` then maps ``g_ema`` name by
name onto NVIDIA's ``Generator``. rosinality's layers compute what NVIDIA's do
with the same stored numbers (equalised-lr scales, ``lr_mul``, the leaky ReLU
gain √2, the modulation bias initialised at 1, the transposed-conv upsampling
and its blur), so the conversion is reshapes only: dropping the leading batch
axes of the constant, weights, noise maps and ToRGB bias. rosinality's own
``convert_weight.py`` flips the upsampling kernels of NVIDIA's TF pickles
exactly as NVIDIA's ``legacy.py`` does, so no flip is needed here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from ..errors import ModelFormatError
from .common import Format, LoadedWeights, check_keys, count_indexed, shape_of
from .nvidia_generators import generator_from_state
from .torch_files import torch_load_weights
from .restricted_pickle import plain
from .stylegan2_layout import (DEFAULT_FILTER, MAX_MAPPING_LAYERS, check_dim, check_resolution, filter_buffer,
                               finish_state, generator_kwargs)

__all__ = ["is_rosinality_state", "load_rosinality", "read_rosinality_checkpoint", "rosinality_to_nvidia"]

FORMAT = Format.ROSINALITY

# Top-level keys of the two forms (see the module docstring).
_CONVERTED_KEYS = frozenset({"g_ema", "latent_avg", "g", "d"})
_TRAINING_KEYS = frozenset({"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"})

# Names only rosinality's generator has, all present at every resolution.
_SIGNATURE = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")


def read_rosinality_checkpoint(path) -> Dict[str, Any]:
    """Read a rosinality ``.pt`` file of either form, without running code from it.

    Returns ``{"g_ema": state dict, "latent_avg": tensor or None, "args": dict,
    "form": "converted" | "training"}``. Raises :class:`UnsafePickleError` if the
    file needs any class beyond tensors, plain containers and
    ``argparse.Namespace``, and :class:`ModelFormatError` for anything that is
    not one of the two forms.
    """
    path = Path(path)
    what = str(path)
    obj = torch_load_weights(path, allowed=(argparse.Namespace,), noun="checkpoint")
    supported = ("a rosinality/stylegan2-pytorch checkpoint: {'g_ema', 'latent_avg'} from convert_weight.py "
                 "or {'g', 'd', 'g_ema', 'g_optim', 'd_optim', 'args'} from train.py")
    if not isinstance(obj, Mapping):
        raise ModelFormatError(f"{what}: holds a {type(obj).__name__}, expected {supported}")
    keys = sorted(str(k) for k in obj)
    unknown = set(keys) - _CONVERTED_KEYS - _TRAINING_KEYS
    if "g_ema" not in obj or unknown:
        raise ModelFormatError(f"{what}: has keys {keys}, expected {supported}")
    g_ema = obj["g_ema"]
    if not (isinstance(g_ema, Mapping) and g_ema
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in g_ema.items())):
        raise ModelFormatError(f"{what}: 'g_ema' is not a state dict of named tensors")
    if not is_rosinality_state(obj):
        raise ModelFormatError(f"{what}: 'g_ema' lacks rosinality's generator names "
                               f"({', '.join(_SIGNATURE)}); is it another StyleGAN port?")
    latent_avg = obj.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise ModelFormatError(f"{what}: 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
    args = plain(obj.get("args")) if obj.get("args") is not None else {}
    if not isinstance(args, dict):
        raise ModelFormatError(f"{what}: 'args' is a {type(obj.get('args')).__name__}, not an argparse.Namespace")
    if args.get("arch", "stylegan2") != "stylegan2":
        raise ModelFormatError(f"{what}: trained with --arch {args['arch']!r}; only rosinality's 'stylegan2' "
                               f"generator is supported")
    form = "training" if ("g_optim" in obj or "args" in obj) else "converted"
    return {"g_ema": dict(g_ema), "latent_avg": latent_avg, "args": args, "form": form}


def is_rosinality_state(obj) -> bool:
    """Whether ``obj`` looks like a rosinality checkpoint: a dict whose ``g_ema`` has rosinality's names."""
    if not isinstance(obj, Mapping):
        return False
    g_ema = obj.get("g_ema")
    return isinstance(g_ema, Mapping) and all(name in g_ema for name in _SIGNATURE)


# ---------------------------------------------------------------------------
# Name mapping


def _drop_leading(n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Drop ``n`` leading axes of length 1 (rosinality keeps batch axes on stored tensors)."""
    def convert(t: torch.Tensor) -> torch.Tensor:
        for _ in range(n):
            if t.ndim == 0 or t.shape[0] != 1:
                return t  # left as is: the shape check names it
            t = t[0]
        return t
    return convert


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(()) if t.numel() == 1 else t


def _flat_bias(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1) if t.ndim == 4 and t.shape[0] == 1 and t.shape[2:] == (1, 1) else t


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _name_table(n_mlp: int, log2_res: int) -> Dict[str, Tuple[str, Callable]]:
    """rosinality name -> (NVIDIA name, tensor conversion)."""
    table: Dict[str, Tuple[str, Callable]] = {}
    for i in range(n_mlp):  # style.0 is the PixelNorm
        table[f"style.{i + 1}.weight"] = (f"mapping.fc{i}.weight", _same)
        table[f"style.{i + 1}.bias"] = (f"mapping.fc{i}.bias", _same)
    table["input.input"] = ("synthesis.b4.const", _drop_leading(1))

    # (rosinality layer, NVIDIA layer, index of its noise map), in synthesis order.
    layers = [("conv1", "synthesis.b4.conv1", 0)]
    torgbs = [("to_rgb1", "synthesis.b4.torgb")]
    for k in range(3, log2_res + 1):
        j = k - 3
        layers += [(f"convs.{2 * j}", f"synthesis.b{2 ** k}.conv0", 2 * k - 5),
                   (f"convs.{2 * j + 1}", f"synthesis.b{2 ** k}.conv1", 2 * k - 4)]
        torgbs.append((f"to_rgbs.{j}", f"synthesis.b{2 ** k}.torgb"))
    for src, dst, noise in layers:
        table[f"{src}.conv.weight"] = (f"{dst}.weight", _drop_leading(1))
        table[f"{src}.conv.modulation.weight"] = (f"{dst}.affine.weight", _same)
        table[f"{src}.conv.modulation.bias"] = (f"{dst}.affine.bias", _same)
        table[f"{src}.noise.weight"] = (f"{dst}.noise_strength", _scalar)
        table[f"{src}.activate.bias"] = (f"{dst}.bias", _same)
        table[f"noises.noise_{noise}"] = (f"{dst}.noise_const", _drop_leading(2))
    for src, dst in torgbs:
        table[f"{src}.conv.weight"] = (f"{dst}.weight", _drop_leading(1))
        table[f"{src}.conv.modulation.weight"] = (f"{dst}.affine.weight", _same)
        table[f"{src}.conv.modulation.bias"] = (f"{dst}.affine.bias", _same)
        table[f"{src}.bias"] = (f"{dst}.bias", _flat_bias)
    return table


def _blur_kernel_names(log2_res: int):
    """The FIR kernels rosinality stores as buffers: rebuilt from the filter, so only checked."""
    names = []
    for k in range(3, log2_res + 1):
        names += [f"convs.{2 * (k - 3)}.conv.blur.kernel", f"to_rgbs.{k - 3}.upsample.kernel"]
    return names


def rosinality_to_nvidia(g_ema_state: Mapping[str, torch.Tensor], latent_avg: Optional[torch.Tensor] = None,
                         what: str = "file", *, lr_multiplier: float = 0.01,
                         args: Optional[Mapping[str, Any]] = None) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """Convert rosinality's ``g_ema`` state dict to NVIDIA's ``Generator`` keywords and state dict.

    Sizes (resolution, latent widths, mapping depth, channels per block) come
    from the tensor shapes. ``latent_avg`` becomes ``mapping.w_avg`` (zeros when
    the file has none, as ``train.py`` snapshots). The mapping's learning-rate
    multiplier is not stored in the weights: rosinality's default 0.01 unless
    ``lr_multiplier`` or ``args['lr_mlp']`` says otherwise. ``args`` (a training
    run's arguments), if given, must agree with the shapes.
    """
    state = {str(k): v for k, v in g_ema_state.items()}
    bad = sorted(k for k, v in state.items() if not (isinstance(v, torch.Tensor) and v.is_floating_point()))
    if bad:
        raise ModelFormatError(f"{what}: not floating-point tensors: {bad[:5]}")

    n_mlp = count_indexed(state, "style.{}.weight", start=1)
    if not 1 <= n_mlp <= MAX_MAPPING_LAYERS:
        raise ModelFormatError(f"{what}: {n_mlp} mapping layers (style.1.weight, ...); "
                               f"expected 1 to {MAX_MAPPING_LAYERS}")
    hidden, z_dim = shape_of(state, "style.1.weight", 2, what, noun='')
    z_dim = check_dim(what, "the latent (z) width", z_dim, "style.1.weight")
    w_dim = check_dim(what, "the W width", shape_of(state, f"style.{n_mlp}.weight", 2, what, noun='')[0],
                      f"style.{n_mlp}.weight")
    hidden = check_dim(what, "the mapping width", hidden, "style.1.weight")

    n_up = count_indexed(state, "to_rgbs.{}.conv.weight")
    resolution = check_resolution(what, 4 * 2 ** n_up, f"{n_up} upsampling ToRGB layers to_rgbs.*")
    log2_res = resolution.bit_length() - 1
    channels = {4: check_dim(what, "the 4x4 channels", shape_of(state, "input.input", 4, what, noun='')[1], "input.input")}
    for k in range(3, log2_res + 1):
        name = f"convs.{2 * (k - 3) + 1}.conv.weight"
        channels[2 ** k] = check_dim(what, f"the {2 ** k}x{2 ** k} channels", shape_of(state, name, 5, what, noun='')[1], name)
    img_channels = check_dim(what, "the image channels", shape_of(state, "to_rgb1.conv.weight", 5, what, noun='')[1],
                             "to_rgb1.conv.weight")

    args = dict(args or {})
    for key, have in (("size", resolution), ("latent", w_dim), ("n_mlp", n_mlp)):
        if key in args and args[key] is not None and int(args[key]) != have:
            raise ModelFormatError(f"{what}: its training args say {key}={args[key]}, but the weights "
                                   f"have {have}")
    lr = float(args.get("lr_mlp", lr_multiplier))

    table = _name_table(n_mlp, log2_res)
    kernels = _blur_kernel_names(log2_res)
    check_keys(what, state, table, ignored=kernels, limit=8,
               against=f"a {resolution}px rosinality generator with {n_mlp} mapping layers")
    fir = filter_buffer(DEFAULT_FILTER) * 4  # rosinality stores the kernel with the upsampling gain
    for name in kernels:
        if name in state and (state[name].shape != fir.shape or not torch.allclose(state[name].float(), fir,
                                                                                   atol=1e-6)):
            raise ModelFormatError(f"{what}: {name} is not the [1,3,3,1] blur kernel; only generators "
                                   f"built with rosinality's default blur_kernel are supported")

    kwargs = generator_kwargs(z_dim=z_dim, w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                              channels=channels, mapping_layers=n_mlp, lr_multiplier=lr,
                              layer_features=hidden, architecture="skip", resample_filter=DEFAULT_FILTER)
    out: Dict[str, torch.Tensor] = {}
    sources: Dict[str, str] = {}
    for src, (dst, convert) in table.items():
        out[dst] = convert(state[src])
        sources[dst] = src
    if latent_avg is None:
        out["mapping.w_avg"] = torch.zeros(w_dim)
    else:
        avg = latent_avg.detach()
        out["mapping.w_avg"] = avg.reshape(-1) if avg.numel() == w_dim else avg
        sources["mapping.w_avg"] = "latent_avg"
    state_out = finish_state(what, out, kwargs, against=f"a {resolution}px rosinality generator", sources=sources)
    return kwargs, state_out


def load_rosinality(path):
    """Read either checkpoint form and build its ``g_ema`` as a :class:`~pulse_sr.networks.stylegan2.StyleGAN2Generator`."""
    ck = read_rosinality_checkpoint(path)
    what = f"{path} (rosinality {ck['form']} checkpoint)"
    kwargs, state = rosinality_to_nvidia(ck["g_ema"], ck["latent_avg"], what, args=ck["args"])
    G = generator_from_state("stylegan2", kwargs, state, what)
    return LoadedWeights(G, FORMAT, metadata={"architecture": "stylegan2", "checkpoint": ck["form"]})
