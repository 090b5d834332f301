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


def _numpy(name: str) -> Callable[[], Any]:
    def get():
        import numpy as np
        # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the
        # old path, so both spellings resolve to whichever module this numpy has.
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy < 2
            from numpy.core import multiarray
        return {"dtype": np.dtype, "ndarray": np.ndarray}.get(name) or getattr(multiarray, name)
    return get


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
    try:
        with open(path, "rb") as f:
            return unpickler(f).load()
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except ModelFormatError as exc:
        raise ModelFormatError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except Exception as exc:  # UnpicklingError, EOFError, ValueError, ... on truncated or corrupt data
        raise ModelFormatError(f"{path}: not a readable {kind} ({type(exc).__name__}: {exc})") from exc
