"""Writing NVIDIA-layout snapshot pickles from recorded state dicts, without NVIDIA's code.

The layout is ``torch_utils.persistence``'s: every network pickles as a call to
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta``
holding the module source, class name and ``nn.Module.__dict__`` (its
``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...). The
source put in here is whatever the test wants a loader to (never) run.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import sys
import types
from pathlib import Path
from typing import Dict, Optional

import torch

BUFFER_NAMES = {"noise_const", "resample_filter", "w_avg", "freqs", "phases", "transform", "up_filter",
                "down_filter", "magnitude_ema"}


def hostile_source(marker: Path) -> str:
    """Module source that, if anyone executed it, would write ``marker``."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\nclass Generator: pass\n"


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its pickled name matters
    raise RuntimeError("stand-in; never called")


class EasyDict(dict):
    pass


@contextlib.contextmanager
def _fake_modules():
    """Make the two globals importable under NVIDIA's names while pickling, then remove them."""
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    tu, tp = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, du = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    EasyDict.__module__ = "dnnlib.util"
    tp._reconstruct_persistent_obj = _reconstruct_persistent_obj
    du.EasyDict = EasyDict
    sys.modules.update({"torch_utils": tu, "torch_utils.persistence": tp, "dnnlib": dn, "dnnlib.util": du})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class Persistent:
    """One pickled persistent module: class name, source, and an ``nn.Module``-like ``__dict__``."""

    def __init__(self, class_name: str, module_src: str, init_kwargs: Optional[dict] = None):
        self.meta_state = {
            "training": False, "_parameters": collections.OrderedDict(), "_buffers": collections.OrderedDict(),
            "_non_persistent_buffers_set": set(), "_modules": collections.OrderedDict(),
            "_forward_hooks": collections.OrderedDict(), "_init_args": (),
            "_init_kwargs": EasyDict(init_kwargs or {}),
        }
        self.class_name = class_name
        self.module_src = module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.meta_state)
        return _reconstruct_persistent_obj, (meta,)


def network(state: Dict[str, torch.Tensor], init_kwargs: dict, module_src: str,
            class_name: str = "Generator") -> Persistent:
    """A persistent module tree holding ``state`` (flat NVIDIA names)."""
    root = Persistent(class_name, module_src, init_kwargs)
    for name, tensor in state.items():
        *path, leaf = name.split(".")
        node = root
        for part in path:
            mods = node.meta_state["_modules"]
            if part not in mods:
                mods[part] = Persistent(part.capitalize(), module_src)
            node = mods[part]
        t = tensor.detach().clone()
        if leaf in BUFFER_NAMES:
            node.meta_state["_buffers"][leaf] = t
        else:
            node.meta_state["_parameters"][leaf] = torch.nn.Parameter(t, requires_grad=False)
    return root


def write_snapshot(path, state: Dict[str, torch.Tensor], init_kwargs: dict, module_src: str,
                   training_path: str = "~/datasets/ffhq-256x256.zip", with_g_ema: bool = True) -> Path:
    """A snapshot like NVIDIA's training loop writes: G, D, G_ema, augment_pipe, training_set_kwargs."""
    D = network({"b4.out.weight": torch.randn(1, 8), "b4.out.bias": torch.zeros(1)}, {"c_dim": 0}, module_src,
                "Discriminator")
    augment = network({"Hz_geom": torch.randn(12)}, {"xflip": 1}, module_src, "AugmentPipe")
    augment.meta_state["_buffers"]["Hz_geom"] = augment.meta_state["_parameters"].pop("Hz_geom")
    snap = {"training_set_kwargs": EasyDict(path=training_path, use_labels=False, max_size=None, xflip=True,
                                            resolution=init_kwargs.get("img_resolution")),
            "G": network(state, init_kwargs, module_src), "D": D, "augment_pipe": augment}
    if with_g_ema:
        snap["G_ema"] = network(state, init_kwargs, module_src)
    path = Path(path)
    with _fake_modules(), open(path, "wb") as f:
        pickle.dump(snap, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path
