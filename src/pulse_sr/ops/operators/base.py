"""The operator contract, the registry, and the spec grammar generated from it.

Every forward operator is an :class:`Operator` subclass that declares

* ``name``: its spec term (``box`` in ``box:8@3,5``), unique in the registry;
* ``stage``: its place in a composition (:class:`Stage`), whatever the order written;
* ``usage``: how its term is written, for error messages (``box:B@ox,oy``);
* ``from_spec(args, ctx)``: the operator from the text after ``name:``;
* ``spec_args()``: that text back, canonical, so that ``parse_operator(op.spec(), ...)``
  rebuilds an equal operator and equal operators print the same;
* ``__call__(hr)`` and ``describe()`` (the dict the report records).

:func:`register` adds a class to :data:`OPERATORS`; :func:`parse_operator` and
:meth:`Compose.spec` are generated from it, so a new operator is one class.
Nothing here reads files: a term that names one (``mask:PATH``) asks the
:class:`SpecContext` for its pixels.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import torch

from ...errors import OperatorSpecError


class Stage(enum.IntEnum):
    """Where a term acts; a composition applies its terms in this order (terms of one stage, which
    commute, in name order, so that a composition has one canonical spec)."""

    BLUR = 0        # on the HR face
    RESAMPLE = 1    # from the model's frame to the input's grid: exactly one per composition
    COLOR = 2       # on the LR image
    MASK = 3        # which LR pixels count


# Read a mask file: (path) -> (h, w) tensor in [0, 1] at the file's own size.
MaskReader = Callable[[str], torch.Tensor]


@dataclass(frozen=True)
class SpecContext:
    """What a term needs besides its text: the input's (h, w), the model's resolution, and
    where mask pixels come from (default: :func:`pulse_sr.images.read_mask`, resolved only
    when a ``mask:`` term is parsed; the web page passes a reader that refuses every path)."""

    lr_size: Tuple[int, int]
    resolution: int
    read_mask: Optional[MaskReader] = None

    def mask_pixels(self, path: str) -> torch.Tensor:
        reader = self.read_mask
        if reader is None:
            from ...images import read_mask as reader  # the IO room reads files, not ops/
        return reader(path)


class Operator:
    """A differentiable forward operator ``A(hr) -> lr`` on (B, C, R, R) tensors in [0, 1].

    ``mask`` is None, or a (1, 1, h, w) tensor of 0/1 marking the pixels of the
    output that are measured (a mask term, or the part of a photo a warp covers).
    """

    name: ClassVar[str] = "operator"
    stage: ClassVar[Stage] = Stage.COLOR
    usage: ClassVar[str] = ""
    mask: Optional[torch.Tensor] = None

    def __call__(self, hr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def from_spec(cls, args: str, ctx: SpecContext) -> "Operator":
        """The operator from the text after ``name:`` (empty when the term is the bare name)."""
        raise OperatorSpecError(f"{cls.name} cannot be written as a spec term")

    def spec_args(self) -> str:
        """The canonical text after ``name:`` ("" for a bare name)."""
        return ""

    def spec(self) -> str:
        """This operator as a spec term; raises OperatorSpecError when it has none (a tensor, a callable)."""
        args = self.spec_args()
        return f"{self.name}:{args}" if args else self.name

    def key(self) -> str:
        """What a resume key records: the canonical spec, or a content hash where there is no spec."""
        return self.spec()

    def describe(self) -> dict:
        return {"name": self.name}

    def __eq__(self, other) -> bool:
        if not isinstance(other, Operator):
            return NotImplemented
        return type(self) is type(other) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.key()))

    def __repr__(self) -> str:
        try:
            return f"<{type(self).__name__} {self.key()}>"
        except OperatorSpecError:
            return f"<{type(self).__name__}>"


OPERATORS: Dict[str, Type[Operator]] = {}


def register(cls: Type[Operator]) -> Type[Operator]:
    """Class decorator: make ``cls`` a spec term (its ``name``), in its ``stage``."""
    if not cls.name or cls.name in OPERATORS and OPERATORS[cls.name] is not cls:
        raise ValueError(f"operator name {cls.name!r} is empty or taken by {OPERATORS.get(cls.name)}")
    OPERATORS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a term (tests that register a toy operator clean up with this)."""
    OPERATORS.pop(name, None)


# ---------------------------------------------------------------------------
# Numbers in specs: parsed leniently, printed canonically and exactly.


def fmt_number(v) -> str:
    """An int as itself; a float as the shortest text that reads back to the same float
    (``repr``), without a trailing ``.0`` for whole numbers (so ``2`` and ``2.0`` print alike)."""
    if isinstance(v, bool):
        raise TypeError("booleans are not spec numbers")
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def numbers(text: str, what: str, n: Optional[int] = None, kind=float) -> List:
    """Numbers separated by ``,``, ``x`` or ``×``; ``n`` of them if given. Non-finite values are refused."""
    parts = [v for v in re.split(r"[,x×]", text) if v != ""]
    try:
        values = [kind(v) for v in parts]
    except (ValueError, OverflowError):
        raise OperatorSpecError(f"{what}: {echo(text)} is not a list of numbers") from None
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise OperatorSpecError(f"{what}: {echo(text)} holds a value that is not a finite number")
    if any(isinstance(v, int) and abs(v) > 1 << 20 for v in values):
        raise OperatorSpecError(f"{what}: {echo(text)} holds a number out of range")
    if n is not None and len(values) != n:
        raise OperatorSpecError(f"{what}: expected {n} numbers, got {echo(text)}")
    return values


def content_hash(*tensors: torch.Tensor) -> str:
    """A short sha256 of tensors' shapes and bytes: the key of an operator that has no spec."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------
# Compositions


class Compose(Operator):
    """Operators applied left to right (in :class:`Stage` order when parsed); the mask is the
    product of the parts' masks: a pixel counts when every part measures it."""

    name = "compose"

    def __init__(self, ops: Sequence[Operator]):
        self.ops = list(ops)
        masks = [op.mask for op in self.ops if op.mask is not None]
        self.mask = None
        for m in masks:
            self.mask = m if self.mask is None else self.mask * m

    def __call__(self, hr):
        for op in self.ops:
            hr = op(hr)
        return hr

    def spec(self) -> str:
        return "+".join(op.spec() for op in self.ops)

    def key(self) -> str:
        return "+".join(op.key() for op in self.ops)

    def describe(self):
        if len(self.ops) == 1:
            return self.ops[0].describe()
        return {"name": "+".join(op.name for op in self.ops), "parts": [op.describe() for op in self.ops]}


def usages() -> str:
    """Every registered term's usage, for error messages."""
    terms = [u for cls in sorted(OPERATORS.values(), key=lambda c: (c.stage, list(OPERATORS).index(c.name)))
             for u in cls.usage.split("|") if u]
    return ", ".join(terms[:-1]) + f" and {terms[-1]}" if len(terms) > 1 else "".join(terms)


# Limits on what a spec may ask for (issue "reliability, round 3"): a spec is user input, and the
# CLI, the web page and reports echo it.
MAX_SPEC_CHARS = 512       # longer specs are refused
MAX_TERMS = 16             # each term runs every step: 20 000 grays would be 20 000 passes
MAX_ECHO = 80              # errors quote at most this much of the bad input


def echo(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def parse_term(term: str, ctx: SpecContext) -> Operator:
    """One ``+``-separated term of a spec, by the registry."""
    name, _, rest = term.strip().partition(":")
    cls = OPERATORS.get(name.strip().lower())
    if cls is None:
        raise OperatorSpecError(f"unknown operator {echo(name.strip().lower())}; the operators are {usages()}, "
                                f"joined by +")
    return cls.from_spec(rest.strip(), ctx)


def split_terms(spec: str) -> List[str]:
    """The ``+``-separated terms of a spec. A ``mask:`` term takes the rest of the spec as its path (so a
    path may hold ``+``): write it last, as the canonical spec does."""
    if not isinstance(spec, str):
        raise OperatorSpecError(f"an operator spec is text, got {type(spec).__name__}")
    if len(spec) > MAX_SPEC_CHARS:
        raise OperatorSpecError(f"operator spec of {len(spec)} characters (at most {MAX_SPEC_CHARS}): {echo(spec)}")
    terms: List[str] = []
    rest = spec
    while rest:
        head, sep, rest = rest.partition("+")
        if head.strip().lower().startswith("mask:"):
            if re.search(r"\+\s*mask:", rest, re.IGNORECASE) or rest.strip().lower().startswith("mask:"):
                raise OperatorSpecError("at most one mask:PATH term (combine the masks into one image)")
            head, rest = head + sep + rest, ""
        if head.strip():
            terms.append(head.strip())
    if not terms:
        raise OperatorSpecError("empty operator spec")
    if len(terms) > MAX_TERMS:
        raise OperatorSpecError(f"{len(terms)} operator terms (at most {MAX_TERMS}): {echo(spec)}")
    return terms


def canonical_order(spec: str) -> str:
    """A spec's terms in the order they apply, names lowercased, spaces dropped: what a run records
    before the input's size is known, so that ``gray+box:8`` and ``box:8+gray`` are one setting.
    Unknown names sort last (the parser refuses them later)."""
    terms = []
    for t in split_terms(spec):
        name, sep, rest = t.partition(":")
        name = name.strip().lower()
        rest = rest.strip() if name == "mask" else rest.replace(" ", "")  # a path keeps its inner spaces
        terms.append((OPERATORS[name].stage if name in OPERATORS else len(Stage), name + sep + rest))
    return "+".join(t for _, t in sorted(terms))


def _applied_order(op: Operator):
    return op.stage, op.name, op.key()


def compose(ops: Sequence[Operator], ctx: SpecContext,
            default: Callable[[int, int, int], Operator]) -> Compose:
    """Terms in stage order with exactly one resampling: ``default(h, w, R)`` when none is given."""
    ops = list(ops)
    masks = [op for op in ops if op.name == "mask"]
    if len(masks) > 1:
        raise OperatorSpecError(f"{len(masks)} mask terms: at most one mask:PATH (combine the masks into one "
                                f"image)")
    resampling = [op for op in ops if op.stage is Stage.RESAMPLE]
    if len(resampling) > 1:
        names = ", ".join(n for n, c in OPERATORS.items() if c.stage is Stage.RESAMPLE)
        raise OperatorSpecError(f"{'+'.join(op.name for op in ops)}: at most one resampling term ({names})")
    if not resampling:
        ops.append(default(*ctx.lr_size, ctx.resolution))
    return Compose(sorted(ops, key=_applied_order))
