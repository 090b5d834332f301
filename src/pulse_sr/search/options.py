"""The settings of one PULSE search, with their defaults (the paper's) and their help texts.

The CLI builds its ``pulse upsample`` and ``pulse eval`` options from these
fields, so defaults, choices and help live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

from ..errors import SettingsError
from .losses import parse_loss
from .schedules import OPTIMIZERS, SCHEDULES

NOISE_TYPES = ("zero", "fixed", "trainable")
# "paper": the reference algorithm (a fixed number of steps from one start); "adaptive": a budget of
# generator passes spent by multi-start with successive halving, continuation and, with --expand,
# latent expansion (pulse_sr.search.adaptive).
PRESETS = ("paper", "adaptive")
DEFAULT_PRESET = "paper"
# Seeds are torch.Generator seeds (at most 2**64 - 1), and sample k of seed s uses s + k.
MAX_SEED = 2 ** 63 - 1


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int in [0, MAX_SEED], else a one-line SettingsError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"{what} must be a whole number from 0 to {MAX_SEED}, got {str(seed)[:40]}")
    return seed


def option(default, help: str, **meta):
    """A field whose metadata carries its help text (and choices or a minimum) for the CLI."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata={"help": help, **meta})
    return dataclasses.field(default=default, metadata={"help": help, **meta})


@dataclasses.dataclass
class PulseOptions:
    """Search settings; the defaults are the paper's reference setting."""

    loss: str = option("100*L2+0.05*GEOCROSS",
                     "Weighted terms joined by '+': L2 or L1 (downscaling), GEOCROSS (latent cross loss).")
    eps: float = option(2e-3, "Success threshold on the downscaling L2.")
    noise: str = option("trainable", "Per-layer noise maps: zero, fixed random, or optimised for the first layers.",
                      choices=NOISE_TYPES)
    trainable_noise_layers: int = option(5, "With --noise trainable: how many of the first noise maps are optimised.",
                                       min=0)
    bad_noise_layers: Sequence[int] = option(
        (-1,), "Noise layers forced to zero, '.'-separated; -1 is the last layer (17 on a 1024-px model).")
    tile_latent: bool = option(False, "One latent for all layers instead of W+.")
    optimizer: str = option("adam", "Optimiser of the latent search.", choices=tuple(OPTIMIZERS))
    lr: float = option(0.4, "Learning rate.")
    steps: int = option(100, "Optimisation steps.", min=1)
    schedule: str = option("linear1cycledrop", "Learning-rate schedule.", choices=SCHEDULES)
    early_stop: bool = option(False, "Stop once every sample is within eps.")
    preset: str = option(DEFAULT_PRESET,
                         "Search: 'paper' (PULSE's: --steps steps from one start) or 'adaptive' (a budget of "
                         "generator passes: several starts, the worse half dropped at rungs, samples within eps "
                         "stop, the rest continue or, with --expand, widen the latent space).", choices=PRESETS)
    budget: Optional[int] = option(None, "Adaptive search: generator passes (forward and backward of one sample) "
                                   "per input, shared equally by its samples; default samples × steps, the "
                                   "paper's cost.", min=1)
    starts: int = option(1, "Adaptive search: starts per sample; with more than one, successive halving keeps "
                            "the better half by L2 at steps 10 and 25 (measured: it does not pay at the "
                            "paper's budget, see docs/results.md).", min=1)
    expand: bool = option(True, "Adaptive search: when W+ plateaus above eps, train every noise map, then "
                                "intermediate features within a small l1 ball (ILO-style). Each result "
                                "records the stage it was found in ('stage' in report.json).")

    def validate(self) -> None:
        """Raise ValueError with a one-line reason for any bad value."""
        parse_loss(self.loss)
        if self.noise not in NOISE_TYPES:
            raise SettingsError(f"unknown noise type {self.noise!r}; choose from {', '.join(NOISE_TYPES)}")
        if self.optimizer not in OPTIMIZERS:
            raise SettingsError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise SettingsError(f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}")
        if self.steps < 1:
            raise SettingsError(f"steps must be at least 1, got {self.steps}")
        # Non-finite values would also make report.json invalid JSON (Infinity, NaN).
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise SettingsError(f"eps must be a positive finite number, got {self.eps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SettingsError(f"lr must be a positive finite number, got {self.lr}")
        if self.preset not in PRESETS:
            raise SettingsError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise SettingsError(f"budget must be a whole number of generator passes, at least 1; got {self.budget}")
        if self.starts < 1:
            raise SettingsError(f"starts must be at least 1, got {self.starts}")
        default_starts = next(f.default for f in dataclasses.fields(self) if f.name == "starts")
        default_expand = next(f.default for f in dataclasses.fields(self) if f.name == "expand")
        if self.preset == "paper" and (self.budget is not None or self.expand != default_expand
                                       or self.starts != default_starts):
            what = "--budget" if self.budget is not None else "--starts" if self.starts != default_starts else \
                "--expand/--no-expand"
            raise SettingsError(f"{what} is an option of the adaptive search; --preset paper runs a fixed "
                                f"--steps from one start (use --preset adaptive, or --steps)")
        if self.trainable_noise_layers < 0:
            raise SettingsError(f"trainable_noise_layers must be at least 0, got {self.trainable_noise_layers}")

    def to_dict(self) -> dict:
        """JSON-ready values (tuples as lists), as recorded in reports."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
