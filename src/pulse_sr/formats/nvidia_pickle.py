"""NVIDIA's torch pickles (stylegan2-ada-pytorch and stylegan3 ``*.pkl``), read without running their code.

A snapshot is a pickled dict (``G``, ``D``, ``G_ema``, ``augment_pipe``,
``training_set_kwargs``, ...) whose networks are ``torch_utils.persistence``
objects: each carries its module's whole source code, which NVIDIA's loader
``exec``'s, plus the class name, the constructor arguments and the
``nn.Module`` state. Here the reconstruct function is replaced by one that
only *records* those fields (:class:`PersistentObject`); the source is kept
as text and never executed. Only the tensor rebuild functions the format needs
are allowed, storages are read back with ``torch.load(weights_only=True)``,
and any other global is an :class:`~pulse_sr.errors.UnsafePickleError`.

The generator (``G_ema``, else ``G``) is then rebuilt from its recorded
constructor arguments, after checking them and the parameter count they imply,
and its state is copied in by name: any missing, unexpected or misshapen
tensor is an error.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Tuple

import torch

from ..errors import ModelFormatError
from .common import Format, LoadedWeights
from .nvidia_generators import generator_from_state, network_kind
from .torch_files import check_torch_file
from .restricted_pickle import COMMON_GLOBALS, AllowListUnpickler, load_allowed, plain

__all__ = ["PersistentObject", "load_nvidia_pickle", "read_nvidia_pickle", "module_state"]

FORMAT = Format.NVIDIA_PICKLE

class PersistentObject:
    """What a ``torch_utils.persistence`` object pickles: recorded here, never instantiated."""

    def __init__(self, meta: Any):
        if not isinstance(meta, Mapping) or meta.get("type") != "class":
            raise ModelFormatError("a persistent object without the expected metadata (type 'class')")
        self.class_name = str(meta.get("class_name"))
        src = meta.get("module_src")
        self.module_src_sha256 = hashlib.sha256(str(src).encode()).hexdigest() if src is not None else None
        state = meta.get("state")
        self.state = dict(state) if isinstance(state, Mapping) else {}

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        kwargs = self.state.get("_init_kwargs") or {}
        return plain(kwargs)

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    def __repr__(self) -> str:
        return f"<persistent {self.class_name} (not executed)>"


def _load_storage(data: bytes):
    """A storage from the bytes ``torch.storage._load_from_bytes`` would read, with torch's safe loader."""
    if not isinstance(data, (bytes, bytearray)):
        raise ModelFormatError("storage data is not bytes")
    check_torch_file(bytes(data), "a storage in the pickle")  # it may not declare more than it holds
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """torch's ``_rebuild_tensor_v2``, for views that fit their storage: no stride 0, no overlap, so a
    tensor never has more elements than the bytes the file holds (converting one to float32 then
    costs at most what the file declared)."""
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or len(size) > 8:
        raise ModelFormatError(f"a tensor with size {str(size)[:60]} and stride {str(stride)[:60]}")
    n = 1
    for d, s in zip(size, stride):
        if not (isinstance(d, int) and isinstance(s, int)) or d < 0 or (d > 1 and s <= 0):
            raise ModelFormatError(f"a tensor with size {str(size)[:60]} and stride {str(stride)[:60]} "
                                   f"(repeated or negative strides)")
        n *= d
    if hasattr(storage, "_untyped_storage"):  # a TypedStorage, counted without its deprecation warning
        have = storage._untyped_storage.nbytes() // torch._utils._element_size(storage.dtype)
    else:
        have = storage.nbytes() if hasattr(storage, "nbytes") else 0
    if not isinstance(storage_offset, int) or storage_offset < 0 or n > have - storage_offset:
        raise ModelFormatError(f"a tensor of {n} elements on a storage of {have}")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, *rest)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not torch.is_tensor(data):
        raise ModelFormatError("a parameter without tensor data")
    return data  # a plain tensor: nothing here trains


_ALLOWED: Dict[Tuple[str, str], Callable[[], Any]] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): lambda: PersistentObject,
    ("torch._utils", "_rebuild_tensor_v2"): lambda: _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda: _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda: _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): lambda: _load_storage,
    **COMMON_GLOBALS,
}


class _Unpickler(AllowListUnpickler):
    allowed = _ALLOWED
    allowed_in = "an NVIDIA stylegan2-ada / stylegan3 pickle"


def read_nvidia_pickle(path) -> Dict[str, Any]:
    """The snapshot dict with every network as a :class:`PersistentObject`; nothing from the file runs."""
    path = Path(path)
    data = load_allowed(path, _Unpickler, "NVIDIA pickle")
    if not isinstance(data, Mapping):
        raise ModelFormatError(f"{path}: holds a {type(data).__name__}, expected NVIDIA's snapshot dict "
                               f"(G, D, G_ema, ...)")
    return dict(data)


def module_state(obj: PersistentObject, prefix: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
    """(name, tensor) for every parameter and persistent buffer, as ``state_dict()`` would list them."""
    state = obj.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, t in (state.get(kind) or {}).items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not torch.is_tensor(t):
                raise ModelFormatError(f"{prefix}{name} is a {type(t).__name__}, not a tensor")
            yield prefix + name, t
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise ModelFormatError(f"{prefix}{name} is a {type(child).__name__}, not a persistent module")
        yield from module_state(child, f"{prefix}{name}.")


def load_nvidia_pickle(path) -> LoadedWeights:
    """Read a stylegan2-ada-pytorch / stylegan3 snapshot and rebuild its ``G_ema`` (else ``G``)."""
    path = Path(path)
    snap = read_nvidia_pickle(path)
    key = "G_ema" if "G_ema" in snap else "G"
    net = snap.get(key)
    if not isinstance(net, PersistentObject):
        raise ModelFormatError(f"{path}: no generator (G_ema or G) in the pickle; it holds {sorted(map(str, snap))}")
    if net.init_args:
        raise ModelFormatError(f"{path}: {key} was built with positional arguments, which NVIDIA's "
                               f"generators never take")
    state = dict(module_state(net))
    kind = network_kind(state)
    G = generator_from_state(kind, net.init_kwargs, state, f"{path} ({key}, {kind})")
    training = plain(snap.get("training_set_kwargs") or {})
    meta: Dict[str, Any] = {"architecture": kind, "network": key}
    if isinstance(training, dict):
        meta["training_set"] = {k: training[k] for k in ("path", "resolution", "use_labels", "xflip")
                                if k in training}
        if "ffhq" in str(training.get("path", "")).lower():
            meta["alignment"] = "ffhq"
    return LoadedWeights(G, FORMAT, metadata=meta)
