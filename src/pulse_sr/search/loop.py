"""The PULSE search: find latents whose image downscales to the input. Tensors in, tensors out.

Section 3 of the paper: minimise ``||DS(G(z)) - I_LR||`` (plus the geodesic
cross loss) by projected gradient descent of per-layer latents on the sphere
sqrt(d) S^(d-1), each mapped into W by the Gaussian fit, and optionally of
the first noise maps. One step reads as the algorithm:

    latent -> prior -> synthesize -> downscale -> loss -> best-tracker -> step -> project

Departures from the reference code, all deliberate:

* the returned image is the best one seen (within eps first, then lowest
  loss), not the last iterate;
* a result is always returned, with a success flag, histories and timings;
* K samples of each input, and several inputs, run as one batch, and each
  sample's start depends only on its own seed;
* any resolution / LR size pair with an integer factor works, and any other
  LR size up to the resolution through antialiased resizing; other forward
  models (pixelation, blur, gray, masks, any callable) through ``operator``.

This module touches no files, no process-wide settings and no image library:
the caller converts images (:mod:`pulse_sr.images`), picks the device and
tunes the process (:mod:`pulse_sr.runtime`).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Union

import torch

from ..errors import InputSizeError, SettingsError
from ..ops.measurement import Measurement, NoiseModel
from ..ops.operators import Compose, as_operator
from .losses import PulseLoss
from .options import PulseOptions, check_seed
from .schedules import lr_factor, make_optimizer
from .sphere import project_, vector_norms
from .start import initial_state  # noqa: F401  (re-exported: the starting state of every search)

if TYPE_CHECKING:
    from ..model import PulseModel

Progress = Callable[[int, int, dict], None]


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
    warnings: List[str] = dataclasses.field(default_factory=list)  # notes for the caller to show
    operator: Optional[Compose] = None  # the forward model A the results match through
    preset: str = "paper"           # which search ran (PulseOptions.preset)
    stopped: bool = False           # stop() ended it before its steps or budget were spent
    stages: Optional[List[str]] = None   # per sample: the space its result was found in (adaptive)
    passes: Optional[List[int]] = None   # per sample: generator passes spent (adaptive)
    sample_steps: Optional[List[int]] = None  # per sample: steps of its longest-running candidate (adaptive)

    @property
    def all_success(self) -> bool:
        return bool(self.success.all())


class _BestTracker:
    """Keeps, per sample, the best image seen: within eps beats outside it, then the lower loss wins."""

    def __init__(self, batch: int, device):
        self.loss = torch.full((batch,), float("inf"), device=device)
        self.l2 = torch.full((batch,), float("inf"), device=device)
        self.ok = torch.zeros(batch, dtype=torch.bool, device=device)
        self.step = torch.zeros(batch, dtype=torch.long, device=device)
        self.img = self.img_lr = self.ws = None

    @torch.no_grad()
    def update(self, step: int, img, img_lr, ws, loss, l2, ok) -> None:
        better = (ok & ~self.ok) | ((ok == self.ok) & (loss < self.loss))
        if self.img is None:
            self.img, self.img_lr, self.ws = img.detach().clone(), img_lr.detach().clone(), ws.detach().clone()
        else:
            m = better.view(-1, 1, 1, 1)
            self.img = torch.where(m, img.detach(), self.img)
            self.img_lr = torch.where(m, img_lr.detach(), self.img_lr)
            self.ws = torch.where(better.view(-1, 1, 1), ws.detach(), self.ws)
        self.loss = torch.where(better, loss, self.loss)
        self.l2 = torch.where(better, l2, self.l2)
        self.ok = self.ok | ok
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)


def _as_batch(lr) -> torch.Tensor:
    if not torch.is_tensor(lr):
        raise TypeError(f"upsample takes a tensor, got {type(lr).__name__}; convert images with "
                        f"pulse_sr.images.pil_to_tensor (or read_image)")
    if lr.ndim == 3:
        lr = lr[None]
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise InputSizeError(f"expected an LR image of shape (3, h, w) or (N, 3, h, w), got {tuple(lr.shape)}")
    return lr.float()


def _zeroed_noise_layers(bad_layers: Sequence[int], count: int, warnings: List[str]) -> set:
    """Indices of noise layers forced to zero; -1 is the last (the paper's layer 17 at 1024 px)."""
    bad = set()
    for i in bad_layers:
        j = i + count if i < 0 else i
        if 0 <= j < count:
            bad.add(j)
        else:
            warnings.append(f"bad noise layer {i} ignored: the model has {count} noise layers")
    return bad


def _noise_settings(opts: PulseOptions) -> tuple:
    return opts.noise, opts.trainable_noise_layers, tuple(opts.bad_noise_layers)


def upsample(lr_image: torch.Tensor, model: "PulseModel", options: Optional[PulseOptions] = None, *,
             samples: int = 1, seed: Union[None, int, Sequence[int]] = None, device=None,
             progress: Optional[Progress] = None,
             callback: Optional[Callable[[int, torch.Tensor, torch.Tensor], None]] = None,
             stop: Optional[Callable[[], bool]] = None, operator=None, noise_sigma: float = 0.0,
             **kwargs) -> PulseResult:
    """Run PULSE on ``lr_image``, a (3, h, w) or (N, 3, h, w) tensor in [0, 1].

    ``model`` is a :class:`pulse_sr.PulseModel` (see :func:`pulse_sr.load_model`).
    ``samples`` starts K searches per input in one batch; sample k uses seed
    ``seed + k``. ``seed`` may also be one seed per input (then sample k of
    input i uses ``seed[i] + k``). Keyword arguments override fields of
    :class:`PulseOptions`.
    ``progress(step, steps, info)`` is called after every step and
    ``callback(step, best_images, best_downscaled)`` too, for saving
    intermediate results. ``operator`` is the forward model A the result must
    match through (see :mod:`pulse_sr.ops.operators`): None for the paper's
    exact bicubic when the size allows it (else antialiased resizing), a spec
    such as ``"gray+box:8@3,5"``, an Operator, or any differentiable
    ``f(hr) -> lr``. ``noise_sigma`` σ (0–255 scale) says the input carries
    Gaussian noise of that std: ε grows by (σ/255)², its expected extra mean
    square residual (``result.eps`` is the ε used). ``stop()``, if given, is asked after every step; when
    it says True the search ends there and returns its best so far (a user's
    Stop button). The search runs on ``device``, or on the model's own
    device; the model itself is never moved (a copy is made for another device).
    (``lr`` in the keyword arguments is the learning rate, as in PulseOptions.)
    """
    opts = dataclasses.replace(options or PulseOptions(), **kwargs)
    opts.validate()
    if samples < 1:
        raise SettingsError(f"samples must be at least 1, got {samples}")
    if not hasattr(model, "prior") or not hasattr(model, "generator"):
        raise TypeError(f"upsample takes a PulseModel (from pulse_sr.load_model), got {type(model).__name__}")
    if device is not None:
        model = model.to(device)
    G, prior, dev = model.generator, model.prior, model.device
    lr = _as_batch(lr_image)
    n_inputs, _, h, w = lr.shape
    op = as_operator(operator, (h, w), G.resolution)
    noise = NoiseModel(noise_sigma)

    if seed is None:
        seed = secrets.randbelow(2 ** 31)
    per_input = [int(x) for x in seed] if isinstance(seed, (list, tuple)) else [int(seed)] * n_inputs
    if len(per_input) != n_inputs:
        raise SettingsError(f"seed: got {len(per_input)} seeds for {n_inputs} inputs")
    seeds = [check_seed(s + k) for s in per_input for k in range(samples)]
    measured = Measurement.of(op, lr, noise).to(dev).repeat(samples)
    eps = measured.eps(opts.eps)
    warnings: List[str] = []
    if G.noise_resolutions:
        bad = _zeroed_noise_layers(opts.bad_noise_layers, len(G.noise_resolutions), warnings)
    else:  # StyleGAN3: the defaults simply do nothing; a changed setting is worth a line
        bad = set()
        if _noise_settings(opts) != _noise_settings(PulseOptions()):
            warnings.append("noise options have no effect: this generator has no noise inputs (StyleGAN3)")
    if opts.preset == "adaptive":
        from .adaptive import adaptive_loop

        out = adaptive_loop(G, prior, op, measured, eps, opts, adaptive_plan(opts, samples), seeds, bad, dev,
                            progress=progress, callback=callback, stop=stop)
        return PulseResult(**out, seeds=seeds, eps=eps, warnings=warnings, operator=op, preset="adaptive")
    return _paper_loop(G, prior, op, measured, eps, opts, seeds, bad, dev, warnings, progress, callback, stop)


ADAPTIVE_FIRST = 0.6       # share of the budget the first phase plans for
ADAPTIVE_LR_SCALE = 2.0    # the first phase's peak learning rate, relative to --lr


def adaptive_plan(opts: PulseOptions, samples: int = 1):
    """The :class:`~.plan.AdaptivePlan` of ``opts``: its budget per sample (``budget`` split over the
    ``samples``, default ``steps``), its starts and, with ``expand``, every stage."""
    from .plan import AdaptivePlan, SuccessiveHalving
    from .stages import default_stages

    per_sample = opts.steps if opts.budget is None else max(1, opts.budget // samples)
    # The first phase plans for 60 % of the budget at twice --lr at its peak; what samples within
    # eps leave, and the rest, go to continuation and expansion (docs/results.md has the sweep).
    return AdaptivePlan(per_sample, SuccessiveHalving(opts.starts), first=ADAPTIVE_FIRST, lr_scale=ADAPTIVE_LR_SCALE,
                        stages=default_stages(opts.expand))


def _paper_loop(G, prior, op, measured, eps, opts, seeds, bad, dev, warnings, progress, callback, stop
                ) -> PulseResult:
    """PULSE's search as the reference runs it: ``opts.steps`` steps, every sample from its one start."""
    batch = len(seeds)
    latent, noise, noise_vars = initial_state(G, opts, seeds, bad, dev)

    params = [latent] + noise_vars
    radii = [vector_norms(p).detach() for p in params]
    opt = make_optimizer(opts.optimizer, params, opts.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(opts.schedule, opts.steps))
    loss_fn = PulseLoss(opts.loss, eps)
    best = _BestTracker(batch, dev)
    loss_hist, l2_hist = [], []
    start = time.perf_counter()
    steps_taken, stopped = 0, False
    for step in range(opts.steps):
        lat = latent.expand(-1, G.num_ws, -1) if opts.tile_latent else latent
        ws = prior.latent_to_w(lat)                         # prior: sphere -> W+ (Sec. 3.3)
        img = (G.synthesize(ws, noise) + 1) / 2             # generator, to [0, 1]
        img_lr = op(img)                                    # DS: the exact bicubic of the reference, or A
        loss, parts = loss_fn(ws, img_lr, measured)         # per-sample loss on the pixels that count
        l2 = parts["L2"].detach()
        ok = l2 <= eps
        best.update(step, img, img_lr, ws, loss.detach(), l2, ok)
        loss_hist.append(loss.detach().cpu())
        l2_hist.append(l2.cpu())
        steps_taken = step + 1
        if callback is not None:
            callback(step, best.img.clamp(0, 1), best.img_lr.clamp(0, 1))
        if progress is not None:
            progress(steps_taken, opts.steps, {"loss": float(loss.detach().mean()), "l2": float(l2.mean()),
                                               "best_l2": float(best.l2.max()),
                                               "done": int(best.ok.sum()), "batch": batch})
        if opts.early_stop and bool(ok.all()):
            break
        if stop is not None and stop():
            stopped = steps_taken < opts.steps
            break
        grads = torch.autograd.grad(loss.sum(), params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        with torch.no_grad():
            for p, r in zip(params, radii):
                project_(p, r)                              # back onto the sphere (Sec. 3.3)
        sched.step()
    seconds = time.perf_counter() - start
    return PulseResult(
        images=best.img.clamp(0, 1).cpu(), downscaled=best.img_lr.clamp(0, 1).cpu(),
        best_l2=best.l2.cpu(), best_loss=best.loss.cpu(), best_step=best.step.cpu(),
        success=(best.l2 <= eps).cpu(), loss_history=torch.stack(loss_hist),
        l2_history=torch.stack(l2_hist), ws=best.ws.cpu(), seeds=seeds, steps_taken=steps_taken,
        seconds=seconds, eps=eps, warnings=warnings, operator=op, stopped=stopped)
