"""The adaptive search: PULSE's step, spent by a budget instead of a fixed count.

Every sample gets ``plan.budget`` generator passes and spends them on its own,
so its result depends only on its seed and the budget:

1. **multi-start with successive halving**: it starts ``starts`` candidates
   (:func:`~.plan.candidate_seed`); at each rung the better half by best L2
   goes on (:class:`~.plan.SuccessiveHalving`);
2. **continuation**: as soon as a candidate is within eps the sample stops
   (what it did not spend is simply not spent); at the end of a phase, a
   sample still improving keeps going, one that has plateaued moves on
   (:class:`~.plan.Continuation`);
3. **latent expansion**: W+ -> every noise map -> intermediate features within
   an l1 ball (:mod:`.stages`), one stage at a time, when the plan has them.

One step for every candidate alive, as in the paper's loop:

    latent -> prior -> synthesize (or until a stage, + offset, from it) -> A -> loss -> best -> step -> project

The loss, eps and the operator are the caller's and are never changed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, List, Optional, Sequence

import torch

from .losses import PulseLoss
from .options import PulseOptions
from .plan import AdaptivePlan, candidate_seed
from .schedules import RowAdam, lr_factor
from .sphere import project_, vector_norms
from .stages import LatentStage, project_l1_, usable_stages
from .start import initial_state


@dataclasses.dataclass
class _Candidate:
    """Host-side state of one row of the batch."""

    sample: int
    index: int               # j, its candidate number within the sample
    stage: int = 0           # index into the plan's usable stages
    phase: int = 0           # 0 is the first phase (the one with rungs)
    t: int = 0               # steps in this phase
    horizon: int = 100       # planned steps of this phase
    lr_scale: float = 1.0
    age: int = 0             # steps since its start, over all phases
    history: List[float] = dataclasses.field(default_factory=list)  # best L2 per step of this phase


@dataclasses.dataclass
class _Sample:
    used: int = 0            # passes spent
    done: bool = False
    ok: bool = False
    loss: float = float("inf")
    l2: float = float("inf")
    step: int = 0            # age of the best candidate when it was found (0-based)
    stage: str = LatentStage.name
    steps: int = 0           # age of the oldest candidate it ran


def adaptive_loop(G, prior, op, measured, eps: float, opts: PulseOptions, plan: AdaptivePlan,
                  seeds: Sequence[int], bad: set, device, *, progress=None, callback=None,
                  stop: Optional[Callable[[], bool]] = None):
    """Search every sample (seed ``seeds[i]``, target row i of ``measured``) as ``plan`` says.

    Returns the fields of a :class:`~.loop.PulseResult` as a dict.
    """
    n = len(seeds)
    stages = usable_stages(plan.stages, G, opts)
    halving = plan.halving
    first = plan.first_horizon()
    rows = [_Candidate(s, j, horizon=first, lr_scale=plan.lr_scale) for s in range(n) for j in range(halving.starts)]
    row_seeds = [candidate_seed(seeds[r.sample], r.index) for r in rows]
    trains_noise = set().union(*(st.noise_layers(opts, len(G.noise_resolutions), bad) for st in stages))
    latent, noise, _ = initial_state(G, opts, row_seeds, bad, device, trainable=trains_noise)
    feature_stage = next((st.feature_stage(G) for st in stages if st.feature_stage(G) is not None), None)
    delta = None             # (R, C, h, w) offsets of the features after feature_stage
    delta_radius = None      # (R,) their l1 radius
    params = [latent] + [m for m in noise if m is not None and m.requires_grad]
    noise_index = [i for i, m in enumerate(noise) if m is not None and m.requires_grad]
    radii = [vector_norms(p).detach() for p in params]
    opt = RowAdam(params)
    target = measured.target
    row_target = torch.tensor([r.sample for r in rows], device=device)
    loss_fn = PulseLoss(opts.loss, eps)
    samples = [_Sample() for _ in range(n)]
    budget_total = plan.budget * n

    if stages[0].feature_stage(G) is not None:  # a plan that starts in the feature space (tests, experiments)
        delta, delta_radius = _free_features(G, prior, opts, latent, noise, feature_stage, None, None,
                                             list(range(len(rows))), stages)
        params.append(delta)
        opt.add(delta)
    best_img = best_lr = best_ws = None
    loss_hist: List[torch.Tensor] = []
    l2_hist: List[torch.Tensor] = []
    start = time.perf_counter()
    step = 0
    stopped = False
    while rows:
        lat = latent.expand(-1, G.num_ws, -1) if opts.tile_latent else latent
        ws = prior.latent_to_w(lat)
        if delta is not None:
            feats = G.synthesize_until(ws, noise, feature_stage)
            img = G.synthesize_from((feats[0] + delta,) + tuple(feats[1:]), feature_stage, ws, noise)
        else:
            img = G.synthesize(ws, noise)
        img = (img + 1) / 2
        img_lr = op(img)
        loss, parts = loss_fn(ws, img_lr, dataclasses.replace(measured, target=target[row_target]))
        l2 = parts["L2"].detach()
        l2s, losses = l2.cpu().tolist(), loss.detach().cpu().tolist()
        step += 1

        if best_img is None:
            best_img = img.new_zeros((n,) + tuple(img.shape[1:]))
            best_lr = img.new_zeros((n,) + tuple(img_lr.shape[1:]))
            best_ws = ws.new_zeros((n,) + tuple(ws.shape[1:]))
        # -- book-keeping: passes, histories, each sample's best ------------------
        winners = {}
        for i, r in enumerate(rows):
            s = samples[r.sample]
            s.used += 1
            r.t += 1
            r.age += 1
            s.steps = max(s.steps, r.age)
            r.history.append(min(r.history[-1], l2s[i]) if r.history else l2s[i])
            ok = l2s[i] <= eps
            key = (not ok, losses[i])
            if key < (not s.ok, s.loss) and (r.sample not in winners or key < winners[r.sample][0]):
                winners[r.sample] = (key, i)
        for si, (key, i) in winners.items():
            s = samples[si]
            s.ok, s.loss, s.l2 = not key[0], key[1], l2s[i]
            s.step, s.stage = rows[i].age - 1, stages[rows[i].stage].name
            best_img[si], best_lr[si], best_ws[si] = img[i].detach(), img_lr[i].detach(), ws[i].detach()
        loss_hist.append(torch.tensor([min((losses[i] for i, r in enumerate(rows) if r.sample == si),
                                           default=samples[si].loss) for si in range(n)]))
        l2_hist.append(torch.tensor([min((l2s[i] for i, r in enumerate(rows) if r.sample == si),
                                         default=samples[si].l2) for si in range(n)]))
        if callback is not None:
            callback(step - 1, best_img.clamp(0, 1), best_lr.clamp(0, 1))

        # -- decisions: who stops, who is dropped, who moves on --------------------
        if stop is not None and stop():
            stopped = True
        for si, s in enumerate(samples):
            if not s.done and (s.ok or s.used >= plan.budget or stopped):
                s.done = True
        keep = [i for i, r in enumerate(rows) if not samples[r.sample].done]
        keep = _halve(rows, keep, halving)
        keep, entering = _phase_ends(rows, keep, samples, plan, stages)
        if progress is not None:
            alive = [rows[i] for i in keep] or rows
            progress(sum(s.used for s in samples), budget_total,
                     {"loss": sum(losses) / len(losses), "l2": sum(l2s) / len(l2s),
                      "best_l2": max(s.l2 for s in samples), "done": sum(s.ok for s in samples),
                      "batch": n, "alive": len(keep), "step": step,
                      "stage": stages[max((r.stage for r in alive), default=0)].name})
        if not keep:
            break

        # -- the step, for every row (the dropped ones are dropped after it) -------
        grads = torch.autograd.grad(loss.sum(), params)
        rates = torch.tensor([opts.lr * r.lr_scale * lr_factor(opts.schedule, r.horizon)(r.t - 1) for r in rows],
                             device=device)
        active = [None] + [torch.tensor([li in stages[r.stage].noise_layers(opts, len(noise), bad) for r in rows],
                                        device=device) for li in noise_index]
        if delta is not None:
            active.append(torch.tensor([stages[r.stage].feature_stage(G) is not None for r in rows], device=device))
        opt.step(grads, rates, active)
        with torch.no_grad():
            for p, rad in zip(params[:1 + len(noise_index)], radii):
                project_(p, rad)
            if delta is not None:
                project_l1_(delta, delta_radius)

        # -- drop rows, then free features for those entering that stage ---------
        if len(keep) < len(rows):
            idx = torch.tensor(keep, device=device)
            rows = [rows[i] for i in keep]
            row_target = row_target[idx]
            latent = latent.detach()[idx].requires_grad_(True)
            noise = [None if m is None else (m.detach()[idx].requires_grad_(True) if m.requires_grad else m[idx])
                     for m in noise]
            params = [latent] + [noise[i] for i in noise_index]
            if delta is not None:
                delta = delta.detach()[idx].requires_grad_(True)
                delta_radius = delta_radius[idx]
                params.append(delta)
            radii = [rad[idx] for rad in radii]
            opt.keep(idx, params)
            entering = [keep.index(i) for i in entering]
        if entering and feature_stage is not None and any(stages[rows[i].stage].feature_stage(G) is not None
                                                          for i in entering):
            delta, delta_radius = _free_features(G, prior, opts, latent, noise, feature_stage, delta, delta_radius,
                                                 [i for i in entering
                                                  if stages[rows[i].stage].feature_stage(G) is not None], stages)
            if len(params) == 1 + len(noise_index):
                params.append(delta)
                opt.add(delta)
            else:
                params[-1] = delta
                opt.params[-1] = delta

    seconds = time.perf_counter() - start
    return dict(images=best_img.clamp(0, 1).cpu(), downscaled=best_lr.clamp(0, 1).cpu(),
                best_l2=torch.tensor([s.l2 for s in samples]), best_loss=torch.tensor([s.loss for s in samples]),
                best_step=torch.tensor([s.step for s in samples]),
                success=torch.tensor([s.l2 <= eps for s in samples]),
                loss_history=torch.stack(loss_hist), l2_history=torch.stack(l2_hist), ws=best_ws.cpu(),
                steps_taken=step, seconds=seconds, stopped=stopped,
                stages=[s.stage for s in samples], passes=[s.used for s in samples],
                sample_steps=[s.steps for s in samples])


def _halve(rows: List[_Candidate], keep: List[int], halving) -> List[int]:
    """``keep`` after the rung of the first phase that some sample's candidates just reached."""
    by_sample = {}
    for i in keep:
        by_sample.setdefault(rows[i].sample, []).append(i)
    out = []
    for si, idx in by_sample.items():
        r0 = rows[idx[0]]
        if r0.phase == 0 and len(idx) > 1 and all(rows[i].t == r0.t for i in idx):
            chosen = halving.keep(r0.t, [rows[i].history[-1] for i in idx])
            idx = [idx[c] for c in chosen]
        out += idx
    return sorted(out)


def _phase_ends(rows: List[_Candidate], keep: List[int], samples, plan: AdaptivePlan, stages):
    """Rows whose phase ends (its horizon, or a plateau) go on in a new phase, or their sample stops.

    Returns the rows kept and those entering a new stage."""
    cont = plan.continuation
    by_sample = {}
    for i in keep:
        by_sample.setdefault(rows[i].sample, []).append(i)
    out, entering = [], []
    for si, idx in by_sample.items():
        def stuck(i):  # a plateau ends a phase early only where a wider space waits
            return len(idx) == 1 and rows[i].stage + 1 < len(stages) and cont.plateaued(rows[i].history,
                                                                                       rows[i].horizon)

        ending = [i for i in idx if rows[i].t >= rows[i].horizon or stuck(i)]
        if not ending:
            out += idx
            continue
        if len(idx) > 1:  # a phase ends with one candidate: the best so far of this sample
            idx = [min(idx, key=lambda i: (rows[i].history[-1], rows[i].index))]
        i = idx[0]
        r, s = rows[i], samples[si]
        left = plan.budget - s.used
        if r.t < r.horizon and not stuck(i):  # only a sibling's phase ended
            out.append(i)
            continue
        move = cont.next_phase(r.history, left, r.stage + 1 < len(stages))
        if move is None:
            s.done = True
            continue
        if move == "expand":
            r.stage += 1
            entering.append(i)
        else:
            r.lr_scale *= cont.lr_scale
        r.phase += 1
        r.t = 0
        r.horizon = max(1, min(left, cont.phase))
        r.history = [r.history[-1]]
        out.append(i)
    return sorted(out), entering


@torch.no_grad()
def _free_features(G, prior, opts, latent, noise, k, delta, radius, entering: List[int], stages):
    """Zero offsets for every row, and the l1 radius of the rows entering the feature stage."""
    lat = latent.expand(-1, G.num_ws, -1) if opts.tile_latent else latent
    feats = G.synthesize_until(prior.latent_to_w(lat.detach()), noise, k)[0]
    rows = feats.shape[0]
    if delta is None:
        delta = torch.zeros_like(feats)
        radius = torch.zeros(rows, device=feats.device)
    rel = next(st.radius for st in stages if st.feature_stage(G) is not None)
    idx = torch.tensor(entering, device=feats.device)
    radius = radius.clone()
    radius[idx] = rel * feats[idx].abs().flatten(1).sum(1)
    return delta.detach().requires_grad_(True), radius
