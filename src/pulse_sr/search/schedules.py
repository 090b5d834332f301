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
