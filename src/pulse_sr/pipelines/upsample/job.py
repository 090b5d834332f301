"""What a ``pulse upsample`` run searches (:class:`UpsampleJob`) and where it runs (:class:`RunContext`).

The job is a frozen value: every setting that changes a result lives here, and
:meth:`UpsampleJob.settings` is the one place that turns it into the dict that
``report.json`` records and that resume keys are made from. Adding an option
is a field here, a line in ``settings()`` and a click option.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable, Optional

from ...errors import InputSizeError, SettingsError
from ...ops.measurement import NoiseModel
from ...ops.operators import MaskReader, canonical_order
from ...search import PulseOptions
from ...search.options import check_seed
from ...trust import DEFAULT_DOMAIN, DOMAIN_MODES
from ..shards import Ranks

# progress(name, step, steps, info) after every search step; info as in pulse_sr.upsample.
FileProgress = Callable[[str, int, int, dict], None]


class AlignMode(str, enum.Enum):
    """How inputs are framed: as given, or faces found in photos (``--align``)."""

    OFF = "off"            # inputs are already framed LR faces
    WARP = "warp"          # a LR photo's own pixels around each face, through the warp into the frame
    RESAMPLE = "resample"  # each face aligned into the frame and downscaled first

    @classmethod
    def of(cls, value) -> "AlignMode":
        """From what callers pass: an AlignMode, False/None (off), True (warp), or a name."""
        if isinstance(value, cls):
            return value
        if value is None or value is False:
            return cls.OFF
        if value is True:
            return cls.WARP
        try:
            return cls(str(value))
        except ValueError:
            raise SettingsError(f"align must be one of off, warp, resample; got {value!r}") from None

    def to_json(self):
        """As reports have always recorded it: false, "warp" or "resample"."""
        return False if self is AlignMode.OFF else self.value


@dataclasses.dataclass(frozen=True)
class UpsampleJob:
    """Every setting of a run that changes its results (the search's, the inputs' and the outputs')."""

    options: PulseOptions = dataclasses.field(default_factory=PulseOptions)  # the search
    samples: int = 1                  # HR samples per input, one batch
    seed: Optional[int] = None        # sample 0's seed; None: the resumed run's, else drawn once per run
    lr_size: Optional[int] = None     # resize inputs to this square size first
    align: AlignMode = AlignMode.OFF  # find faces in photos first
    operator: Optional[str] = None    # forward-model spec for every input; None: detected per input
    noise_sigma: float = 0.0          # Gaussian noise σ (0–255) the inputs carry; ε grows by (σ/255)²
    save_intermediate: bool = False   # write every step's best image under OUT/<stem>/
    domain: str = DEFAULT_DOMAIN      # the out-of-domain test: report (p-value only), strict (decides), off

    def __post_init__(self):
        object.__setattr__(self, "align", AlignMode.of(self.align))
        if self.operator is not None:
            # Terms in the order they apply: `gray+box:8` and `box:8+gray` are one setting.
            object.__setattr__(self, "operator", canonical_order(self.operator))

    def validate(self, model) -> None:
        """Raise a one-line typed error for any value ``model`` cannot run."""
        self.options.validate()
        if self.seed is not None:
            check_seed(self.seed + self.samples - 1, "--seed")
        if self.samples < 1:
            raise SettingsError(f"samples must be at least 1, got {self.samples}")
        if self.lr_size is not None and not 1 <= self.lr_size <= model.resolution:
            raise InputSizeError(f"--lr-size {self.lr_size}: LR sizes go from 1 to the model's "
                                 f"{model.resolution} px")
        NoiseModel(self.noise_sigma)
        if self.domain not in DOMAIN_MODES:
            raise SettingsError(f"domain must be one of {', '.join(DOMAIN_MODES)}, got {self.domain!r}")

    def with_seed(self, seed: int) -> "UpsampleJob":
        return dataclasses.replace(self, seed=int(seed))

    def settings(self, model) -> dict:
        """The run's settings as ``report.json`` records them (also what resume keys hash)."""
        return {"model": model.source, "resolution": model.resolution, "options": self.options.to_dict(),
                "samples": self.samples, "lr_size": self.lr_size, "align": self.align.to_json(), "seed": self.seed,
                "operator": self.operator, "noise_sigma": self.noise_sigma,
                **({} if self.domain == DEFAULT_DOMAIN else {"domain": self.domain})}


@dataclasses.dataclass
class RunContext:
    """Where and how a run goes, without changing its results."""

    device: Any = None                          # cpu, cuda, mps or None (the best available)
    ranks: Ranks = dataclasses.field(default_factory=Ranks)  # this process among torchrun's
    progress: Optional[FileProgress] = None     # after every search step
    stop: Optional[Callable[[], bool]] = None   # asked after every step: True ends the run with its best
    read_mask: Optional[MaskReader] = None      # pixels of a mask:PATH term (default: read the file)
