"""What the input determines, beside the search's own verdict: the ``trust`` object of each result.

* :mod:`.domain`: could the measurement have come from the model at all (a p-value calibrated on
  the model's own samples through the same operator)?
* :mod:`.identity`: with K >= 2 samples, are the K faces one person or strangers?

:func:`verdict` turns a result's success and trust into one word. The out-of-domain test decides
the verdict only under ``domain="strict"``: on the bundled model it flags too many real faces
(more than 5 % in some UTKFace groups; ``docs/results.md``) to overrule the search by default,
so ``domain="report"`` (the default) records the p-value and leaves the verdict to best L2 vs eps.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import torch

DOMAIN_MODES = ("report", "strict", "off")
DEFAULT_DOMAIN = "report"
CONSISTENT, NOT_WITHIN_EPS, OUT_OF_DOMAIN = "consistent", "not within eps", "out of domain"
VERDICTS = (CONSISTENT, NOT_WITHIN_EPS, OUT_OF_DOMAIN)
MAX_CPU_RESOLUTION = 256   # above this, calibrating on the CPU (3000 generator passes) is skipped unless forced

log = logging.getLogger(__name__)


def verdict(success: bool, trust: Optional[dict], domain: str = DEFAULT_DOMAIN) -> str:
    """``consistent``, ``not within eps`` or, with ``domain="strict"``, ``out of domain``."""
    if domain == "strict" and trust is not None and trust.get("in_domain") is False:
        return OUT_OF_DOMAIN
    return CONSISTENT if success else NOT_WITHIN_EPS


def domain_fields(model, operator, lr: torch.Tensor, *, force: bool = False) -> Optional[dict]:
    """``{"in_domain_p", "in_domain", "alpha"}`` for one input ((3, h, w) or (1, 3, h, w)), or None
    when the test was skipped (a large model on the CPU; ``force`` runs it anyway)."""
    from .domain import domain_test, per_input

    if per_input(operator):
        log.info("out-of-domain test not run: a warp is made for one input, so it has no calibration to reuse")
        return None
    res = int(getattr(model.generator, "resolution", 0) or 0)
    if not force and str(model.device).startswith("cpu") and res > MAX_CPU_RESOLUTION:
        log.info("out-of-domain test skipped: calibrating a %d-px model on the CPU takes minutes "
                 "(--domain strict runs it)", res)
        return None
    test = domain_test(model, operator)
    p = float(test.p_value(lr if lr.ndim == 4 else lr[None])[0])
    return {"in_domain_p": round(p, 4), "in_domain": bool(p >= test.alpha), "alpha": test.alpha}


def identity_fields(model, images: torch.Tensor) -> Optional[dict]:
    """The identity fields of K >= 2 results, or None (K < 2, or dlib missing: said once in the log)."""
    from ..errors import FaceEmbedderUnavailable
    from .identity import identity

    if images.shape[0] < 2:
        return None
    try:
        return identity(images, model)
    except FaceEmbedderUnavailable as exc:
        log.info("identity fields left out: %s", exc)
        return None


def summary(trusts: List[Optional[dict]], k: int) -> List[str]:
    """Plain sentences for one input's K results (the CLI summary and the web card)."""
    from .identity import sentence

    t = next((t for t in trusts if t), None)
    if t is None:
        return []
    out = []
    if "in_domain_p" in t:
        out.append(f"in-domain p = {t['in_domain_p']:.3f}" +
                   ("" if t["in_domain"] else " (unlike the model's own faces)"))
    if "identity_spread" in t:
        out.append(sentence(t, k))
    return out
