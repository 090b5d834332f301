"""NVIDIA's TensorFlow network pickles (StyleGAN v1 and StyleGAN2), read without TensorFlow.

A TF pickle is a tuple (G, D, Gs) of ``dnnlib.tflib.network.Network`` states.
They are read with a restricted unpickler and stub classes, so TensorFlow is never
imported and no pickled code runs: only allow-listed globals resolve (stubs for
``Network`` and ``EasyDict``, ``OrderedDict``, numpy array reconstruction);
anything else raises :class:`UnsafePickleError`. Both the v1 reader
(:mod:`.tf_pickle`) and the StyleGAN2 one (:mod:`.tf_stylegan2`) start here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Dict, Iterable, Mapping, Tuple

import numpy as np
import torch

from ..errors import ModelFormatError
from .restricted_pickle import COMMON_GLOBALS, AllowListUnpickler, load_allowed

__all__ = ["TFNetworkStub", "read_networks", "unpickle_tf", "check_static_kwargs", "as_float_tensor",
           "collect_tf_variables"]

# ---------------------------------------------------------------------------
# Restricted unpickling of the official TensorFlow pickle


class TFNetworkStub:
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
    ("dnnlib.tflib.network", "Network"): lambda: TFNetworkStub,
    **COMMON_GLOBALS,
}


class RestrictedUnpickler(AllowListUnpickler):
    """Unpickler that resolves only the allow-listed globals above."""

    allowed = _ALLOWED_GLOBALS
    allowed_in = "an official StyleGAN pickle"


def unpickle_tf(path: Path):
    return load_allowed(path, RestrictedUnpickler, "StyleGAN pickle")


# ---------------------------------------------------------------------------
# Official TensorFlow pickle


def check_static_kwargs(what: str, kwargs: dict, required: Mapping[str, object]) -> None:
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


def as_float_tensor(value, name: str, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float32).clone()
    if isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(np.asarray(value).dtype, np.number):
        return torch.from_numpy(np.array(value, dtype=np.float32))
    raise ModelFormatError(f"{what}: variable {name} is a {type(value).__name__}, not a numeric array")


def collect_tf_variables(Gs: TFNetworkStub, what: str) -> Dict[str, np.ndarray]:
    """All of Gs's variables under canonical names: 'G_mapping/...', 'G_synthesis/...', or Gs-own.

    The official pickle keeps each component's variables in the component, named
    relative to it ('Dense0/weight'); other writers flatten them into Gs with or
    without the component scope. All three layouts end up the same here.
    """
    role_prefix = {"mapping": "G_mapping/", "synthesis": "G_synthesis/"}
    scope_to_prefix = {"G_mapping": "G_mapping/", "G_synthesis": "G_synthesis/"}
    comps = Gs.components
    for role, comp in comps.items():
        if role in role_prefix and isinstance(comp, TFNetworkStub):
            scope_to_prefix[comp.name] = role_prefix[role]

    out: Dict[str, np.ndarray] = {}

    def put(name: str, value) -> None:
        if name in out:
            if np.shape(out[name]) != np.shape(value) or not np.array_equal(out[name], value):
                raise ModelFormatError(f"{what}: variable {name} appears twice with different values")
            return
        out[name] = value

    def entries(net: TFNetworkStub, label: str) -> Iterable[Tuple[str, object]]:
        for item in net.variables:
            if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                raise ModelFormatError(f"{what}: {label} has a malformed variables entry {item!r:.80}")
            yield item[0], item[1]

    for role, prefix in role_prefix.items():
        comp = comps.get(role)
        if comp is None:
            continue
        if not isinstance(comp, TFNetworkStub):
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




def read_networks(path) -> Tuple[TFNetworkStub, TFNetworkStub, TFNetworkStub]:
    """The (G, D, Gs) Network stubs of a TF pickle, or one line saying what the file holds instead."""
    path = Path(path)
    obj = unpickle_tf(path)
    if not (isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, TFNetworkStub) for n in obj)):
        raise ModelFormatError(f"{path}: expected a pickled (G, D, Gs) tuple of Networks, got {type(obj).__name__}")
    if obj[2].state.get("version") not in (2, 3, 4):
        raise ModelFormatError(f"{path}: unknown Network pickle version {obj[2].state.get('version')!r}")
    return obj
