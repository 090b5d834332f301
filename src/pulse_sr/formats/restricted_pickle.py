"""Unpickling with an allow-list: the one mechanism behind every pickle format read here.

A format names the globals its files may ask for (each mapped to a stub or a
safe rebuild function); anything else is an
:class:`~pulse_sr.errors.UnsafePickleError` naming the global, so no class or
function from the file is ever imported or run. :func:`load_allowed` turns the
failures of reading a file into one-line errors.
"""

from __future__ import annotations

import argparse
import collections
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Tuple

from ..errors import ModelFormatError, UnsafePickleError

Factories = Mapping[Tuple[str, str], Callable[[], Any]]


class EasyDictStub(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""


# What one array or tensor of a model file may declare before anything is allocated: the largest
# StyleGAN tensor is a few million elements, and real numpy pickles rebuild arrays from shape (0,).
MAX_ELEMENTS = 64 << 20
MAX_RECONSTRUCT_ELEMENTS = 4096
MAX_DEPTH = 100


def _numpy(name: str) -> Callable[[], Any]:
    def get():
        import numpy as np
        # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the
        # old path, so both spellings resolve to whichever module this numpy has.
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy < 2
            from numpy.core import multiarray
        if name == "ndarray":
            return _guarded_array_class()
        if name == "_reconstruct":
            return _checked_reconstruct(multiarray._reconstruct)
        return {"dtype": np.dtype}.get(name) or getattr(multiarray, name)
    return get


def _elements(shape) -> int:
    n = 1
    for d in shape:
        if not isinstance(d, int) or d < 0:
            raise ModelFormatError(f"an array with shape {str(shape)[:60]}")
        n *= d
    return n


def _checked_reconstruct(reconstruct):
    """numpy's ``_reconstruct`` (which allocates ``shape`` at once), for small shapes only."""
    def rebuild(subtype, shape, dtype):
        if _elements(shape if isinstance(shape, tuple) else (shape,)) > MAX_RECONSTRUCT_ELEMENTS:
            raise ModelFormatError(f"an array rebuilt at shape {str(shape)[:60]}; numpy's own pickles start "
                                   f"from an empty one")
        return reconstruct(_guarded_array_class(), shape, dtype)
    return rebuild


_GUARDED = None


def _guarded_array_class():
    """An ndarray whose unpickling checks that the state holds the bytes its shape and dtype declare."""
    global _GUARDED
    if _GUARDED is None:
        import numpy as np

        class GuardedArray(np.ndarray):
            def __setstate__(self, state):
                if not (isinstance(state, tuple) and len(state) == 5):
                    raise ModelFormatError("an array with an unexpected pickled state")
                _, shape, dtype, _, raw = state
                n = _elements(shape)
                if not isinstance(dtype, np.dtype) or dtype.hasobject:
                    raise ModelFormatError("an array of Python objects")
                if n > MAX_ELEMENTS or n * dtype.itemsize > MAX_ELEMENTS * 8:
                    raise ModelFormatError(f"an array of {n} elements (at most {MAX_ELEMENTS})")
                if not isinstance(raw, (bytes, bytearray)) or len(raw) != n * dtype.itemsize:
                    raise ModelFormatError(f"an array that declares {n * dtype.itemsize} bytes and holds "
                                           f"{len(raw) if isinstance(raw, (bytes, bytearray)) else 'no'} bytes")
                return super().__setstate__(state)

        _GUARDED = GuardedArray
    return _GUARDED


def check_depth(obj: Any, what: str, limit: int = MAX_DEPTH) -> None:
    """ModelFormatError if containers in ``obj`` nest deeper than ``limit`` (checked without recursion)."""
    stack = [(obj, 0)]
    seen = set()
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            raise ModelFormatError(f"{what}: containers nested over {limit} deep")
        if isinstance(value, (list, tuple, set, frozenset)):
            children = value
        elif isinstance(value, Mapping):
            children = list(value.keys()) + list(value.values())
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            children = list(vars(value).values())
        else:
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        stack.extend((c, depth + 1) for c in children)


# What NVIDIA's pickles (TF and torch) use for numpy arrays and scalars, and for their dicts.
COMMON_GLOBALS: Dict[Tuple[str, str], Callable[[], Any]] = {
    ("dnnlib.util", "EasyDict"): lambda: EasyDictStub,
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
    ("numpy", "dtype"): _numpy("dtype"),
    ("numpy", "ndarray"): _numpy("ndarray"),
    ("numpy.core.multiarray", "scalar"): _numpy("scalar"),
    ("numpy._core.multiarray", "scalar"): _numpy("scalar"),
    ("numpy.core.multiarray", "_reconstruct"): _numpy("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): _numpy("_reconstruct"),
}


def plain(value: Any) -> Any:
    """Unpickled settings as plain Python: mappings (EasyDicts, OrderedDicts) and ``argparse.Namespace``
    as dicts, tuples as lists, numpy and torch scalars as numbers."""
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


class AllowListUnpickler(pickle.Unpickler):
    """Resolves only ``allowed``; a subclass sets it and ``allowed_in`` (the format, for messages)."""

    allowed: Factories = {}
    allowed_in = "this format"

    def find_class(self, module: str, name: str):
        factory = self.allowed.get((module, name))
        if factory is None:
            raise UnsafePickleError(f"pickle asks for {module}.{name}, which is not on the allow-list of "
                                    f"{self.allowed_in}; refusing to load it")
        return factory()


def load_allowed(path: Path, unpickler: type, kind: str) -> Any:
    """Unpickle ``path`` with ``unpickler``; every failure is one line naming the file (``kind``: what it should be)."""
    from ..safe_paths import require_regular_file

    try:
        require_regular_file(path, kind)
        with open(path, "rb") as f:
            obj = unpickler(f).load()
        check_depth(obj, str(path))
        return obj
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (RecursionError, MemoryError) as exc:
        raise ModelFormatError(f"{path}: not a readable {kind} ({type(exc).__name__}: nested too deeply or too "
                               f"large)") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on truncated or corrupt data
        raise ModelFormatError(f"{path}: not a readable {kind} ({type(exc).__name__}: {exc})") from exc
