"""Write the third-party generator files the converters read, from the fixtures in ``fixtures/generators/``.

The fixtures hold tensors and plain values only (``torch.load(weights_only=True)``
reads them); these helpers turn one back into the file its authors' code
writes, so that tests read real file layouts without shipping any:

* :func:`write_tf_stylegan2_pickle`: NVIDIA's TF pickle, a (G, D, Gs) tuple of
  ``dnnlib.tflib.network.Network`` states, with numpy arrays as TF leaves them;
* :func:`write_rosinality_checkpoints`: rosinality's ``convert_weight.py`` output
  and a ``train.py`` snapshot (with ``args`` as an ``argparse.Namespace``).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Tuple

import numpy as np
import torch


class _Network:
    """Pickles as ``dnnlib.tflib.network.Network`` with the given state, as TF's class does."""

    def __init__(self, state: dict):
        self._state = state

    def __getstate__(self) -> dict:
        return self._state


class _EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (the official pickles keep components in one)."""


# Where the official pickles say these classes live; the modules need not exist here.
_SPELLED = {_Network: ("dnnlib.tflib.network", "Network"), _EasyDict: ("dnnlib.util", "EasyDict")}


class _OfficialNamesPickler(pickle._Pickler):
    """Writes the two stand-ins above under their official module paths (no fake modules needed)."""

    def save_global(self, obj, name=None):
        spelled = _SPELLED.get(obj)
        if spelled is None:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + f"{spelled[0]}\n{spelled[1]}\n".encode())
        self.memoize(obj)


def _numpy(value):
    """A tensor as TF leaves a variable's value: an ndarray, or a numpy scalar for 0-d variables."""
    a = value.detach().cpu().numpy().astype(np.float32) if isinstance(value, torch.Tensor) else np.asarray(value)
    return a[()] if a.ndim == 0 else a.copy()


def _network(name: str, func: str, static_kwargs: dict, variables, components: dict, build_module_src: str,
             version: int = 4, scale: float = 1.0) -> _Network:
    return _Network({
        "version": version, "name": name, "static_kwargs": _EasyDict(static_kwargs),
        "components": _EasyDict(components), "build_module_src": build_module_src, "build_func_name": func,
        "variables": [(str(n), _numpy(v) * np.float32(scale)) for n, v in variables]})


def write_tf_stylegan2_pickle(path, fixture: dict, build_module_src: str) -> Path:
    """Write the official (G, D, Gs) pickle for a ``tf-stylegan2`` fixture.

    Gs is the recorded network. G has the same structure with all variables
    zero (a reader must take Gs, the third element); D is a one-variable dummy.
    Every Network carries ``build_module_src``, which TensorFlow's own loader
    would execute and a safe reader must not.
    """
    path = Path(path)
    names = fixture.get("names", {"Gs": "Gs", "mapping": "G_mapping", "synthesis": "G_synthesis"})
    funcs = fixture.get("build_func_names",
                        {"Gs": "G_main", "mapping": "G_mapping", "synthesis": "G_synthesis_stylegan2"})
    variables = fixture["variables"]
    version = int(fixture.get("version", 4))

    def generator(name: str, scale: float) -> _Network:
        components = {
            "mapping": _network(names["mapping"], funcs["mapping"], fixture["mapping_kwargs"],
                                variables["mapping"], {}, build_module_src, version, scale),
            "synthesis": _network(names["synthesis"], funcs["synthesis"], fixture["synthesis_kwargs"],
                                  variables["synthesis"], {}, build_module_src, version, scale)}
        return _network(name, funcs["Gs"], fixture["static_kwargs"], variables["Gs"], components,
                        build_module_src, version, scale)

    common = {k: fixture["static_kwargs"][k] for k in ("num_channels", "resolution", "label_size")
              if k in fixture["static_kwargs"]}
    D = _network("D", "D_stylegan2", common, [("Output/bias", torch.zeros(1))], {}, build_module_src, version)
    with open(path, "wb") as f:
        _OfficialNamesPickler(f, protocol=3).dump((generator("G", 0.0), D, generator(names["Gs"], 1.0)))
    return path


def write_rosinality_checkpoints(dirpath, fixture: dict) -> Tuple[Path, Path]:
    """Write a ``rosinality`` fixture as rosinality's two file forms; returns (converted, training) paths.

    converted: ``convert_weight.py``'s ``{"g_ema", "latent_avg"}``;
    training: ``train.py``'s snapshot, ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}``
    with a tiny dummy discriminator and real Adam optimiser states.
    """
    dirpath = Path(dirpath)
    dirpath.mkdir(parents=True, exist_ok=True)
    g_ema = {k: v.clone() for k, v in fixture["g_ema"].items()}
    converted = dirpath / "rosinality-converted.pt"
    torch.save({"g_ema": g_ema, "latent_avg": fixture["latent_avg"].clone()}, converted)

    gen = torch.Generator().manual_seed(0)
    d = {"convs.0.0.weight": torch.randn(8, 3, 1, 1, generator=gen), "convs.0.1.bias": torch.zeros(8),
         "final_linear.1.weight": torch.randn(1, 8, generator=gen), "final_linear.1.bias": torch.zeros(1)}

    def optimiser_state(n: int) -> dict:
        p = torch.nn.Parameter(torch.randn(n, generator=gen))
        opt = torch.optim.Adam([p], lr=0.002, betas=(0.0, 0.99))
        p.grad = torch.ones_like(p)
        opt.step()
        return opt.state_dict()

    training = dirpath / "rosinality-training.pt"
    torch.save({
        "g": {k: v + 0.01 for k, v in g_ema.items()},  # the raw generator differs from its moving average
        "d": d, "g_ema": g_ema, "g_optim": optimiser_state(4), "d_optim": optimiser_state(4),
        "args": argparse.Namespace(**fixture["args"]), "ada_aug_p": 0.0}, training)
    return converted, training
