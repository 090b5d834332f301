"""Forward operators: what turns a generated HR face into the measurement the user has.

PULSE's promise is that its output, put through the forward operator A, gives
the input back within ε. The paper's A is the exact bicubic downscale by an
integer factor; real inputs are often something else. Each operator is a
differentiable map ``A(hr) -> lr`` on (B, 3, R, R) tensors in [0, 1], written
as a spec term, and they compose:

* ``bicubic:F``  the paper's exact downscale by F (the default when the LR size divides R);
* ``resize:HxW`` antialiased bicubic resampling to any size up to R (non-square too);
* ``box:B@ox,oy`` block means on a grid whose boundaries fall at x ≡ ox, y ≡ oy (mod B),
  partial border blocks included: editor pixelation, at the input's own size;
* ``nearest:F@p`` one pixel per F×F cell, at phase p (or ``@px,py``);
* ``warp:WxH@x0,y0:M`` the model's frame seen in a photo (``pulse upsample --align`` on LR photos);
* ``blur:gauss:σ`` / ``blur:motion:len,angle`` a blur of the HR face before the resampling;
* ``gray``       BT.601 luma, replicated to three channels;
* ``mask:PATH``  only the pixels where the mask (at the LR size) is white count.

A spec joins terms with ``+`` (``gray+box:8@3,5``). Whatever the order written,
they apply in :class:`Stage` order (blur → resampling → gray → mask), and a
spec without a resampling term gets the default one for the input's size.
``op.spec()`` prints the canonical spec, which :func:`parse_operator` reads
back to an equal operator; ``op.key()`` is what resume keys record.

Layout: :mod:`.base` (the contract, the registry, compositions), one module per
family (:mod:`.resampling`, :mod:`.blur`, :mod:`.gray`, :mod:`.mask`,
:mod:`.warp`, :mod:`.custom`), :mod:`.spec` (:func:`parse_operator`, and the operator an input
gets when none is named). A new operator is a registered class in a module here,
imported below (see docs/architecture.md).
"""

from __future__ import annotations

from ...errors import OperatorSpecError
from ..mosaic import detect_mosaic
from .base import (OPERATORS, Compose, MaskReader, Operator, SpecContext, Stage, canonical_order, fmt_number,
                   parse_term, register, unregister)
from .blur import Blur
from .custom import Custom
from .gray import Gray
from .mask import Mask
from .resampling import Bicubic, Box, Nearest, Resize, default_resampling
from .spec import as_operator, auto_operator, is_gray, parse_operator
from .warp import Warp

__all__ = ["Operator", "Compose", "Stage", "SpecContext", "MaskReader", "OPERATORS", "register", "unregister",
           "Bicubic", "Resize", "Box", "Nearest", "Blur", "Gray", "Mask", "Warp", "Custom",
           "parse_operator", "parse_term", "as_operator", "auto_operator", "default_resampling", "is_gray",
           "detect_mosaic", "canonical_order", "fmt_number", "OperatorSpecError"]

