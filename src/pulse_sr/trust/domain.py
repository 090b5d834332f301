"""Could the input have come from the model at all? A prior predictive check in LR space.

PULSE's verdict (best L2 within eps) certifies a face for almost anything: a cat's 8×8 thumbnail is
as easy to match as a face's. This test asks the prior question, before any search: how plausible
is the *measurement* y under the model, i.e. how typical is y among A(G(z)) for the model's own
samples z, seen through the same operator A?

* **Calibration** (on the model's samples only, never on real or non-face images): ``n_fit``
  samples G(z) through A give a Gaussian in LR space: its mean and top principal components,
  with the rest of the variance as one isotropic residual. The score of an LR image is its squared
  Mahalanobis distance there (components + residual), computed over the pixels the operator
  measures. ``n_held`` further samples, with other seeds, give the null distribution of the score.
* **p-value**, two-sided (a typicality test): the Gaussian's samples live on a shell, so an input
  *too close* to the mean (a flat gray square, which is near the mean face at 8×8) is as atypical
  as one too far. With ``F`` the held-out scores' empirical distribution, ``p = min(1, 2 ·
  min(#{held >= s} + 1, #{held <= s} + 1) / (n_held + 1))``, uniform-ish for a measurement drawn
  from the model (exchangeability), so flagging ``p < alpha`` has a false-alarm rate of about
  ``alpha`` on the model's own samples.

Calibrations are cached per generator (a hash of all its weights) and operator key, in the process
and on disk under ``$PULSE_CACHE/domain_test`` (written 0600, read back only if still ours and
private, recomputed if corrupt), so each costs ``n_fit + n_held`` generator passes once: about a
minute for the bundled model on two CPU cores. An operator made per input (the warp of each face
in a photo) has no reusable calibration; callers skip the test for it (:func:`per_input`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

CACHE_VERSION = 1
log = logging.getLogger(__name__)

DEFAULT_FIT = 1000
DEFAULT_HELD = 1000
DEFAULT_ALPHA = 0.01       # the false-alarm rate on the model's own samples
MAX_COMPONENTS = 64
CALIBRATION_SEED = 0       # fit samples use seeds from here, held-out samples from HELD_SEED
HELD_SEED = 1_000_003


@dataclasses.dataclass(frozen=True)
class DomainTest:
    """A calibrated LR-space test for one model and operator (see the module docstring)."""

    mean: torch.Tensor         # (D,)
    components: torch.Tensor   # (k, D) orthonormal rows
    variances: torch.Tensor    # (k,)
    residual: float            # variance per dimension outside the components
    held: torch.Tensor         # (n_held,) sorted scores of held-out model samples
    pixels: Optional[torch.Tensor]  # (h*w,) bool: the measured pixels, or None for all
    operator: str              # the operator's key
    alpha: float = DEFAULT_ALPHA

    def _vectors(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr.detach().float().cpu().flatten(2)           # (B, C, h*w)
        if self.pixels is not None:
            x = x[:, :, self.pixels]
        return x.flatten(1)

    def score(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) LR images -> (B,) squared Mahalanobis distances (larger: less like the model)."""
        d = self._vectors(lr) - self.mean
        proj = d @ self.components.T
        rest = d.square().sum(1) - proj.square().sum(1)
        return (proj.square() / self.variances).sum(1) + rest.clamp(min=0) / self.residual

    def p_value(self, lr: torch.Tensor) -> torch.Tensor:
        """(B,) two-sided p-values in (0, 1]: how far out in either tail of the held-out scores."""
        s = self.score(lr)
        n = len(self.held)
        above = n - torch.searchsorted(self.held, s, right=False)   # held >= s
        below = torch.searchsorted(self.held, s, right=True)        # held <= s
        tail = torch.minimum(above, below)
        return (2.0 * (1 + tail).double() / (1 + n)).clamp(max=1.0)

    def in_domain(self, p: torch.Tensor) -> torch.Tensor:
        return p >= self.alpha


def model_samples_lr(model, operator, n: int, seed: int, batch: int = 250) -> torch.Tensor:
    """(n, C, h, w): A(G(z)) for n of the model's samples (no truncation, random noise maps), in [0, 1];
    the same for the same ``seed``."""
    G = model.generator
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            b = min(batch, n - i)
            z = torch.randn(b, G.z_dim, generator=gen).to(model.device)
            # Noise maps from the same seeded generator, so a calibration is the same on every rerun.
            noise = [x.to(model.device) for x in G.make_noise(b, "random", generator=gen, device="cpu")]
            ws = G.mapping(z)[:, None, :].repeat(1, G.num_ws, 1)
            img = ((G.synthesize(ws, noise) + 1) / 2).clamp(0, 1)
            out.append(operator(img).clamp(0, 1).cpu())
    return torch.cat(out)


def calibrate(model, operator, *, n_fit: int = DEFAULT_FIT, n_held: int = DEFAULT_HELD,
              alpha: float = DEFAULT_ALPHA, components: int = MAX_COMPONENTS) -> DomainTest:
    """The :class:`DomainTest` of ``model`` through ``operator`` (an Operator or Compose)."""
    fit = model_samples_lr(model, operator, n_fit, CALIBRATION_SEED)
    mask = getattr(operator, "mask", None)
    pixels = None if mask is None else (mask.reshape(-1) > 0.5).cpu()
    x = fit.flatten(2)
    if pixels is not None:
        x = x[:, :, pixels]
    x = x.flatten(1).double()
    mean = x.mean(0)
    xc = x - mean
    dim = xc.shape[1]
    k = max(1, min(components, dim - 1 if dim > 1 else 1, n_fit // 10))
    cov = xc.T @ xc / max(n_fit - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = evals.argsort(descending=True)
    evals, evecs = evals[order].clamp(min=0), evecs[:, order]
    total = float(evals.sum())
    rest = float(evals[k:].sum()) / max(dim - k, 1) if dim > k else 0.0
    floor = max(total / dim * 1e-3, 1e-10)  # keeps near-constant directions from dividing by ~0
    test = DomainTest(mean.float(), evecs[:, :k].T.float().contiguous(), evals[:k].clamp(min=floor).float(),
                      max(rest, floor), torch.empty(0), pixels, _key(operator), alpha)
    held = test.score(model_samples_lr(model, operator, n_held, HELD_SEED)).sort().values
    return dataclasses.replace(test, held=held)


def _key(operator) -> str:
    try:
        return operator.key()
    except Exception:  # a bare callable: its identity is all there is
        return f"callable-{id(operator)}"


_CACHE: Dict[Tuple[str, str, int, int], DomainTest] = {}
_LOCK = threading.Lock()
_FIELDS = ("mean", "components", "variances", "held")


def per_input(operator) -> bool:
    """Whether ``operator`` is made for one input (a warp), so no calibration of it can be reused."""
    return "warp" in _key(operator)


def generator_hash(G) -> str:
    """sha256 over every parameter and buffer of ``G`` (names, shapes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.float().numpy().tobytes() if t.is_floating_point() else t.numpy().tobytes())
    return h.hexdigest()


def _cache_file(folder: Path, gen: str, op: str, n_fit: int, n_held: int) -> Path:
    tag = hashlib.sha256(f"{CACHE_VERSION}|{gen}|{op}|{n_fit}|{n_held}".encode()).hexdigest()[:32]
    return folder / f"domain-{tag}.pt"


def _read(path: Path, op: str) -> Optional[DomainTest]:
    from ..formats.torch_files import torch_load_weights
    from ..runtime import trusted_file

    if not path.exists():
        return None
    if not trusted_file(path):
        path.unlink(missing_ok=True)  # not ours, or writable by others: recompute rather than trust it
        return None
    try:
        d = torch_load_weights(path, noun="cached domain test")
        meta = d["meta"].tolist()
        pixels = d.get("pixels")
        test = DomainTest(*(d[k].float() for k in _FIELDS[:3]), residual=float(meta[0]), held=d["held"].float(),
                          pixels=None if pixels is None else pixels.bool(), operator=op, alpha=float(meta[1]))
        if test.components.shape[1] != test.mean.shape[0] or test.held.ndim != 1:
            raise ValueError("shapes do not agree")
        return test
    except Exception:  # a corrupt or foreign entry is recomputed, never trusted
        path.unlink(missing_ok=True)
        return None


def _write(path: Path, test: DomainTest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    d = {k: getattr(test, k).contiguous() for k in _FIELDS}
    d["meta"] = torch.tensor([test.residual, test.alpha], dtype=torch.float64)
    if test.pixels is not None:
        d["pixels"] = test.pixels.to(torch.uint8)
    try:
        torch.save(d, tmp)
        os.chmod(tmp, 0o600)  # only files nobody else can write are read back
        tmp.replace(path)
    except OSError as exc:
        log.debug("domain test not cached: %s", exc)
    finally:
        tmp.unlink(missing_ok=True)


def domain_test(model, operator, *, n_fit: Optional[int] = None, n_held: Optional[int] = None,
                cache: Optional[Path] = None) -> DomainTest:
    """:func:`calibrate`, cached per generator weights, operator key and sizes, in the process and on disk
    (``cache``, default ``$PULSE_CACHE/domain_test``); sizes default to ``DEFAULT_FIT``/``DEFAULT_HELD``."""
    from ..runtime import trusted_cache

    n_fit = n_fit or DEFAULT_FIT
    n_held = n_held or DEFAULT_HELD

    G = model.generator
    gen_key = generator_hash(G)  # a fraction of a second even at 1024 px; weights that change get a new test
    op = _key(operator)
    key = (gen_key, op, n_fit, n_held)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    path = _cache_file(Path(cache) if cache is not None else trusted_cache("domain_test"), gen_key, op, n_fit, n_held)
    test = _read(path, op)
    if test is None:
        log.info("calibrating the out-of-domain test for operator %s (%d model samples, once per model "
                 "and operator)", op, n_fit + n_held)
        test = calibrate(model, operator, n_fit=n_fit, n_held=n_held)
        _write(path, test)
    with _LOCK:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = test
    return test
