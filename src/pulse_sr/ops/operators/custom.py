"""Any differentiable ``fn(hr) -> lr`` (Python API only): no spec, a key from its code."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch

from ...errors import OperatorSpecError
from .base import Operator, Stage


@dataclass(eq=False)
class Custom(Operator):
    """Any differentiable ``fn(hr) -> lr``; counts as the composition's resampling."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    name = "custom"
    stage = Stage.RESAMPLE

    def __call__(self, hr):
        return self.fn(hr)

    def spec(self) -> str:
        raise OperatorSpecError("a Python callable has no spec; its key() hashes its code")

    def key(self) -> str:
        code = getattr(self.fn, "__code__", None)
        text = repr((getattr(self.fn, "__qualname__", type(self.fn).__qualname__),
                     code.co_code if code is not None else b"", code.co_consts if code is not None else ()))
        return f"custom:{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def describe(self):
        return {"name": "custom", "fn": getattr(self.fn, "__name__", type(self.fn).__name__)}
