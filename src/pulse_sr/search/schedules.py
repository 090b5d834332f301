"""Optimisers and learning-rate schedules of the latent search (the "scheduler" part).

The schedules are the reference's, as functions of the step index x in
[0, steps): ``fixed``; ``linear1cycle`` (up from lr/10 to lr at mid-run and
back); ``linear1cycledrop`` (the same cycle over the first 90 % of steps,
then a linear drop from lr/10 to lr/1000).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Iterable

import torch

OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "sgdm": partial(torch.optim.SGD, momentum=0.9),
    "adam": torch.optim.Adam,
    "adamax": torch.optim.Adamax,
}

SCHEDULES = ("fixed", "linear1cycle", "linear1cycledrop")


def lr_factor(schedule: str, steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at step x."""
    if schedule == "fixed":
        return lambda x: 1.0
    if schedule == "linear1cycle":
        return lambda x: (9 * (1 - abs(x / steps - 0.5) * 2) + 1) / 10
    if schedule == "linear1cycledrop":
        def f(x: int) -> float:
            if x < 0.9 * steps:
                return (9 * (1 - abs(x / (0.9 * steps) - 0.5) * 2) + 1) / 10
            return 0.1 + (x - 0.9 * steps) / (0.1 * steps) * (0.001 - 0.1)
        return f
    raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr=lr)


class RowAdam:
    """Adam whose state is kept per row of the batch, so rows can be dropped and each has its own rate.

    The update is torch's Adam (no weight decay, no amsgrad) with ``lr`` a (B,)
    tensor of rates. Each parameter counts, per row, the steps that row trained it
    (``active``), and its bias corrections use that count, so a parameter a row
    starts training mid-run starts as Adam would. :meth:`keep` drops rows;
    :meth:`add` registers a parameter (zero state) mid-run.
    """

    def __init__(self, params, betas=(0.9, 0.999), eps: float = 1e-8):
        self.b1, self.b2 = betas
        self.eps = eps
        self.params, self.m, self.v, self.t = [], [], [], []
        for p in params:
            self.add(p)

    def add(self, p: torch.Tensor) -> None:
        self.params.append(p)
        self.m.append(torch.zeros_like(p))
        self.v.append(torch.zeros_like(p))
        self.t.append(torch.zeros(p.shape[0], device=p.device, dtype=torch.float64))

    @torch.no_grad()
    def step(self, grads, lr: torch.Tensor, active=None) -> None:
        """One update; ``active[i]`` (B,) bool says which rows train parameter i (None: all)."""
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if g is None:
                continue
            on = None if active is None else active[i]
            m, v, t = self.m[i], self.v[i], self.t[i]
            shape = (p.shape[0],) + (1,) * (p.ndim - 1)
            if on is not None:
                g = g * on.view(shape).to(g.dtype)
                t += on.to(t.dtype)
            else:
                t += 1
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            tc = t.clamp(min=1)  # float64: 1 - 0.999 ** t cancels badly in float32
            bc1 = (1 - self.b1 ** tc).to(p.dtype)
            bc2 = (1 - self.b2 ** tc).sqrt().to(p.dtype)
            step = (lr / bc1).view(shape) * m / (v.sqrt() / bc2.view(shape) + self.eps)
            if on is not None:
                step = step * on.view(shape).to(step.dtype)
            p.sub_(step)

    def keep(self, index: torch.Tensor, params) -> None:
        """Keep rows ``index`` of the state; ``params`` are the kept parameters, in the same order."""
        self.params = list(params)
        self.m = [m[index] for m in self.m]
        self.v = [v[index] for v in self.v]
        self.t = [t[index] for t in self.t]
