"""How the adaptive search spends its budget: candidate seeds, successive halving, continuation.

Each object here is a small rule the loop in :mod:`.adaptive` asks; none holds tensors.

* :func:`candidate_seed` -- where candidate j of the sample with seed s starts;
* :class:`SuccessiveHalving` -- how many starts, and at which steps the worse half is dropped;
* :class:`Continuation` -- at the end of a phase: stop, keep going, or expand the latent space;
* :class:`AdaptivePlan` -- the budget and the rules together, and the horizon they leave.

The budget is counted in generator passes (one forward and backward of one
sample). Every sample has its own share and its own candidates, so a sample's
result depends only on its seed and the budget, never on the batch it ran in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import List, Optional, Sequence, Tuple

from ..errors import SettingsError
from .stages import LatentStage

# User seeds are at most 2**63 - 1 (search.options.MAX_SEED); derived seeds live above that.
DERIVED_BASE = 2 ** 63


def candidate_seed(seed: int, j: int) -> int:
    """The seed candidate ``j`` of the sample with seed ``seed`` starts from.

    Candidate 0 is the sample's own seed, so its start is the paper's. For
    ``j >= 1`` it is ``2**63 + (the first 8 bytes of
    sha256("pulse-sr/candidate/<seed>/<j>") as a big-endian integer, mod
    2**63)``: a torch seed above every user seed (those are below 2**63), so no
    extra candidate can start where another sample (seed ``s + k``) starts.
    """
    if j == 0:
        return int(seed)
    digest = hashlib.sha256(f"pulse-sr/candidate/{int(seed)}/{int(j)}".encode()).digest()
    return DERIVED_BASE + int.from_bytes(digest[:8], "big") % DERIVED_BASE


@dataclasses.dataclass(frozen=True)
class SuccessiveHalving:
    """``starts`` candidates per sample; at each step in ``rungs`` the better half (by best L2 so far)
    survives, rounding up, until one is left. ``starts=1`` is a single start (no rungs)."""

    starts: int = 4
    rungs: Tuple[int, ...] = (10, 25)

    def __post_init__(self):
        if self.starts < 1:
            raise SettingsError(f"starts must be at least 1, got {self.starts}")
        if list(self.rungs) != sorted(set(self.rungs)) or any(r < 1 for r in self.rungs):
            raise SettingsError(f"halving rungs must be increasing positive steps, got {self.rungs}")

    def alive_after(self, rung: int) -> int:
        """Candidates left after the first ``rung`` rungs (1 after the last one)."""
        n = self.starts
        for _ in range(rung):
            n = max(1, math.ceil(n / 2))
        return 1 if rung >= len(self.rungs) else n

    def used_rungs(self) -> Tuple[int, ...]:
        """The rungs that drop someone: as many as halve ``starts`` down to one, the last made final."""
        n, out = self.starts, []
        for r in self.rungs:
            if n <= 1:
                break
            out.append(r)
            n = max(1, math.ceil(n / 2))
        return tuple(out)

    def passes_to(self, step: int) -> int:
        """Generator passes one sample spends to bring its candidates to ``step``."""
        rungs = self.used_rungs()
        total, prev, n = 0, 0, self.starts
        for i, r in enumerate(rungs):
            if step <= r:
                return total + n * (step - prev)
            total += n * (r - prev)
            prev = r
            n = 1 if i == len(rungs) - 1 else max(1, math.ceil(n / 2))
        return total + n * max(0, step - prev)

    def keep(self, step: int, scores: Sequence[float]) -> List[int]:
        """Indices (into ``scores``, lower is better) of the candidates that go on after ``step``."""
        rungs = self.used_rungs()
        if step not in rungs or len(scores) <= 1:
            return list(range(len(scores)))
        last = step == rungs[-1]
        n = 1 if last else max(1, math.ceil(len(scores) / 2))
        order = sorted(range(len(scores)), key=lambda i: (scores[i], i))  # ties: the lower candidate
        return sorted(order[:n])


@dataclasses.dataclass(frozen=True)
class Continuation:
    """What a sample does when a phase ends, or when it stops improving, above eps.

    Improving means the best L2 fell by at least ``min_gain`` (relative) over the
    last ``window`` steps. At the end of a phase, a sample still improving (or
    with no wider space left) gets a continuation phase in the same space; one
    that has plateaued moves to the next stage. Within a phase, a plateau after
    at least ``window`` steps and ``patience`` of the phase ends the phase early
    when there is a next stage to move to. A new phase needs at least
    ``min_phase`` passes of budget left and plans at most ``phase`` steps.
    """

    window: int = 10
    min_gain: float = 0.01
    patience: float = 0.5
    min_phase: int = 10
    phase: int = 40
    lr_scale: float = 0.5      # a continuation phase's peak learning rate, relative to the one before

    def improving(self, history: Sequence[float]) -> bool:
        """True while ``history`` (best L2 per step of this phase) keeps falling."""
        if len(history) <= self.window:
            return True
        before, now = history[-1 - self.window], history[-1]
        return now < before * (1 - self.min_gain)

    def plateaued(self, history: Sequence[float], horizon: int) -> bool:
        """Stuck within a phase: long enough in it and no longer improving."""
        return len(history) >= max(self.window + 1, self.patience * horizon) and not self.improving(history)

    def next_phase(self, history: Sequence[float], left: int, has_next_stage: bool) -> Optional[str]:
        """'continue', 'expand' or None (the sample is done), for a phase that ended above eps.

        With budget left, a sample still improving, or one with no wider space to go to,
        continues where it is; one that has plateaued with a next stage expands."""
        if left < self.min_phase:
            return None
        if self.improving(history) or not has_next_stage:
            return "continue"
        return "expand"


@dataclasses.dataclass(frozen=True)
class AdaptivePlan:
    """The adaptive search's budget (passes per sample) and the rules that spend it.

    The first phase is planned so that, with its candidates and rungs, it uses
    ``first`` of the budget; what is left (and what a sample within eps or a
    dropped candidate does not use) is there for continuation and expansion.
    """

    budget: int
    halving: SuccessiveHalving = SuccessiveHalving()
    continuation: Continuation = Continuation()
    first: float = 0.7
    lr_scale: float = 1.0              # the first phase's peak learning rate, relative to --lr
    stages: tuple = (LatentStage(),)   # the spaces it may widen into, in order (see .stages)

    def __post_init__(self):
        if self.budget < 1:
            raise SettingsError(f"the budget must be at least 1 generator pass per sample, got {self.budget}")
        if not 0 < self.first <= 1:
            raise SettingsError(f"first must be in (0, 1], got {self.first}")

    def first_horizon(self) -> int:
        """Steps of the first phase: the most whose passes fit in ``first`` of the budget (at least 1)."""
        target = max(1, int(self.budget * self.first))
        lo, hi = 1, target
        while lo < hi:  # passes_to grows with the step, so bisect for the largest that fits
            mid = (lo + hi + 1) // 2
            if self.halving.passes_to(mid) <= target:
                lo = mid
            else:
                hi = mid - 1
        return lo
