"""The PULSE search (the "pipeline"): find latents whose image downscales to the input.

Section 3 of the paper: minimise ``||DS(G(z)) - I_LR||`` (plus the geodesic
cross loss) by projected gradient descent of per-layer latents on the sphere
sqrt(d) S^(d-1), each mapped into W by the Gaussian fit, and optionally of
the first noise maps. Departures from the reference code, all deliberate:

* the returned image is the best one seen (within eps first, then lowest
  loss), not the last iterate;
* a result is always returned, with a success flag, histories and timings;
* K samples of each input, and several inputs, run as one batch, and each
  sample's start depends only on its own seed;
* any resolution / LR size pair with an integer factor works.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Union

import torch

from .bicubic import bicubic_downscale
from .devices import pick_device
from .errors import InputSizeError
from .losses import PulseLoss, parse_loss
from .paths import cache_dir
from .perf import tune_malloc
from .prior import gaussian_fit_for, latent_to_w
from .schedules import SCHEDULES, OPTIMIZERS, lr_factor, make_optimizer
from .sphere import project_, vector_norms

if TYPE_CHECKING:
    import PIL.Image

NOISE_TYPES = ("zero", "fixed", "trainable")


@dataclasses.dataclass
class PulseOptions:
    """Search settings; the defaults are the paper's reference setting."""

    loss: str = "100*L2+0.05*GEOCROSS"      # Weighted loss terms (L2, L1, GEOCROSS).
    eps: float = 2e-3                       # Success threshold on the downscaling L2.
    noise: str = "trainable"                # zero, fixed or trainable noise maps.
    trainable_noise_layers: int = 5         # With 'trainable': optimise the first k maps.
    bad_noise_layers: Sequence[int] = (-1,)  # Noise forced to zero; -1 = last layer (17 at 1024 px, as the paper).
    tile_latent: bool = False               # One latent for all layers instead of W+.
    optimizer: str = "adam"                 # sgd, sgdm, adam or adamax.
    lr: float = 0.4                         # Base learning rate.
    steps: int = 100                        # Optimisation steps.
    schedule: str = "linear1cycledrop"      # fixed, linear1cycle or linear1cycledrop.
    early_stop: bool = False                # Stop once every sample is within eps.

    def validate(self) -> None:
        parse_loss(self.loss)
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"unknown noise type {self.noise!r}; choose from {', '.join(NOISE_TYPES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")


@dataclasses.dataclass
class PulseResult:
    """What a search returns; sample ``n * K + k`` is input n's k-th sample."""

    images: torch.Tensor            # (B, 3, R, R) in [0, 1]: the best image of each sample.
    downscaled: torch.Tensor        # (B, 3, h, w) in [0, 1]: DS(images).
    best_l2: torch.Tensor           # (B,) downscaling L2 of the returned image.
    best_loss: torch.Tensor         # (B,) total loss of the returned image.
    best_step: torch.Tensor         # (B,) step (0-based) at which it was found.
    success: torch.Tensor           # (B,) best_l2 <= eps.
    loss_history: torch.Tensor      # (steps_taken, B) total loss per step.
    l2_history: torch.Tensor        # (steps_taken, B) L2 per step.
    ws: torch.Tensor                # (B, num_ws, w_dim) W+ of the returned image.
    seeds: List[int]                # Seed of each sample.
    steps_taken: int
    seconds: float
    eps: float
    warnings: List[str] = dataclasses.field(default_factory=list)

    @property
    def all_success(self) -> bool:
        return bool(self.success.all())


def valid_lr_sizes(resolution: int) -> List[int]:
    """LR sizes h with an integer factor f = resolution / h that the downscaler supports."""
    out = []
    for h in range(1, resolution + 1):
        f = resolution // h
        if resolution % h == 0 and (f == 1 or 3 * f - (3 * f) // 2 < resolution):
            out.append(h)
    return out


def check_lr_size(h: int, w: int, resolution: int) -> int:
    """Return the downscale factor for an (h, w) input, or raise InputSizeError."""
    valid = valid_lr_sizes(resolution)
    if h != w or h not in valid:
        raise InputSizeError(f"{w}×{h} is not a supported LR size for a {resolution}-px model; "
                             f"use a square input of {', '.join(map(str, valid))} px, or resize")
    return resolution // h


def _as_batch(lr) -> torch.Tensor:
    if not torch.is_tensor(lr):
        from .images import pil_to_tensor
        lr = pil_to_tensor(lr)
    if lr.ndim == 3:
        lr = lr[None]
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise InputSizeError(f"expected an LR image of shape (3, h, w) or (N, 3, h, w), got {tuple(lr.shape)}")
    return lr.float()


def upsample(lr_image: Union[torch.Tensor, "PIL.Image.Image"], generator, options: Optional[PulseOptions] = None, *,
             samples: int = 1, seed: Optional[int] = None, device=None,
             progress: Optional[Callable[[int, int, dict], None]] = None,
             callback: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None,
             **kwargs) -> PulseResult:
    """Run PULSE on ``lr_image`` ((3, h, w) or (N, 3, h, w) in [0, 1], or a PIL image).

    ``samples`` starts K searches per input in one batch; sample k uses seed
    ``seed + k``. Keyword arguments override fields of :class:`PulseOptions`.
    ``progress(step, steps, info)`` is called after every step and
    ``callback(step, best_images, best_downscaled)`` too, for saving
    intermediate results. The generator is moved to ``device``.
    """
    opts = dataclasses.replace(options or PulseOptions(), **kwargs)
    opts.validate()
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    G = generator
    dev = pick_device(device)
    if dev.type == "cpu":
        tune_malloc()
    G.to(dev)
    lr = _as_batch(lr_image)
    n_inputs, _, h, w = lr.shape
    factor = check_lr_size(h, w, G.resolution)
    fit = gaussian_fit_for(G, cache=cache_dir() / "gaussian_fit")
    fit = {k: v.to(dev) for k, v in fit.items()}

    batch = n_inputs * samples
    if seed is None:
        seed = secrets.randbelow(2 ** 31)
    seeds = [seed + k for _ in range(n_inputs) for k in range(samples)]
    lr_ref = lr.to(dev).repeat_interleave(samples, dim=0)

    warnings: List[str] = []
    num_ws, w_dim = G.num_ws, G.w_dim
    res = G.noise_resolutions
    bad = set()
    for i in opts.bad_noise_layers:
        j = i + len(res) if i < 0 else i
        if 0 <= j < len(res):
            bad.add(j)
        else:
            warnings.append(f"bad noise layer {i} ignored: the model has {len(res)} noise layers")

    # Each sample draws its latent, then its noise maps, from its own seed, so a
    # sample is the same whether it runs alone or in a batch.
    lat_rows, noise_rows = [], []
    for s in seeds:
        g = torch.Generator().manual_seed(s)
        lat_rows.append(torch.randn(1 if opts.tile_latent else num_ws, w_dim, generator=g))
        noise_rows.append([torch.randn(1, r, r, generator=g) for r in res])
    latent = torch.stack(lat_rows).to(dev).requires_grad_(True)
    noise: List[Optional[torch.Tensor]] = []
    noise_vars: List[torch.Tensor] = []
    for i, r in enumerate(res):
        if opts.noise == "zero" or i in bad:
            noise.append(None)  # the same as a zero map, without a full-size pass
            continue
        n = torch.stack([row[i] for row in noise_rows]).to(dev)
        if opts.noise == "trainable" and i < opts.trainable_noise_layers:
            n.requires_grad_(True)
            noise_vars.append(n)
        noise.append(n)

    params = [latent] + noise_vars
    radii = [vector_norms(p).detach() for p in params]
    opt = make_optimizer(opts.optimizer, params, opts.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(opts.schedule, opts.steps))
    loss_fn = PulseLoss(opts.loss, opts.eps)

    best_img = best_lr = best_ws = None
    best_loss = torch.full((batch,), float("inf"), device=dev)
    best_l2 = torch.full((batch,), float("inf"), device=dev)
    best_ok = torch.zeros(batch, dtype=torch.bool, device=dev)
    best_step = torch.zeros(batch, dtype=torch.long, device=dev)
    loss_hist, l2_hist = [], []
    start = time.perf_counter()
    steps_taken = 0
    for step in range(opts.steps):
        lat = latent.expand(-1, num_ws, -1) if opts.tile_latent else latent
        ws = latent_to_w(lat, fit)
        img = (G.synthesize(ws, noise) + 1) / 2
        img_lr = bicubic_downscale(img, factor)
        loss, parts = loss_fn(ws, img_lr, lr_ref)
        with torch.no_grad():
            l2 = parts["L2"].detach()
            ok = l2 <= opts.eps
            # Within eps beats outside it; then the lower loss wins.
            better = (ok & ~best_ok) | ((ok == best_ok) & (loss.detach() < best_loss))
            if best_img is None:
                best_img, best_lr, best_ws = img.detach().clone(), img_lr.detach().clone(), ws.detach().clone()
            else:
                m = better.view(-1, 1, 1, 1)
                best_img = torch.where(m, img.detach(), best_img)
                best_lr = torch.where(m, img_lr.detach(), best_lr)
                best_ws = torch.where(better.view(-1, 1, 1), ws.detach(), best_ws)
            best_loss = torch.where(better, loss.detach(), best_loss)
            best_l2 = torch.where(better, l2, best_l2)
            best_ok = best_ok | ok
            best_step = torch.where(better, torch.full_like(best_step, step), best_step)
            loss_hist.append(loss.detach().cpu())
            l2_hist.append(l2.cpu())
        steps_taken = step + 1
        if callback is not None:
            callback(step, best_img.clamp(0, 1), best_lr.clamp(0, 1))
        if progress is not None:
            progress(steps_taken, opts.steps, {"loss": float(loss.detach().mean()), "l2": float(l2.mean()),
                                               "best_l2": float(best_l2.max()),
                                               "done": int(best_ok.sum()), "batch": batch})
        if opts.early_stop and bool(ok.all()):
            break
        grads = torch.autograd.grad(loss.sum(), params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        with torch.no_grad():
            for p, r in zip(params, radii):
                project_(p, r)
        sched.step()
    seconds = time.perf_counter() - start
    return PulseResult(
        images=best_img.clamp(0, 1).cpu(), downscaled=best_lr.clamp(0, 1).cpu(),
        best_l2=best_l2.cpu(), best_loss=best_loss.cpu(), best_step=best_step.cpu(),
        success=(best_l2 <= opts.eps).cpu(), loss_history=torch.stack(loss_hist),
        l2_history=torch.stack(l2_hist), ws=best_ws.cpu(), seeds=seeds, steps_taken=steps_taken,
        seconds=seconds, eps=opts.eps, warnings=warnings)
