"""pulse-sr: PULSE (Menon, Damian et al., CVPR 2020) in PyTorch.

PULSE searches a generator's latent space for realistic high-resolution images
that downscale to a given low-resolution input. Its outputs are imaginary
people: plausible faces consistent with the input, never a recovery of the
real person, and not to be used for identification.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from .errors import (DownloadError, InputImageError, InputSizeError, ModelFormatError, OperatorSpecError,
                     OutputFolderError, PulseError, SettingsError, UnsafePickleError)

__version__ = "0.1.0"

# The library logs and never prints; an application adds a handler (the CLI adds one).
logging.getLogger(__name__).addHandler(logging.NullHandler())

# Heavy names are imported on first use, so that `import pulse_sr` (and
# commands such as `pulse models list`) do not pay for importing torch.
_LAZY = {
    "save_model": "pulse_sr.model",
    "inspect_model": "pulse_sr.model",
    "GaussianPrior": "pulse_sr.search.prior",
    "UpsampleJob": "pulse_sr.pipelines.upsample",
    "UpsampleReport": "pulse_sr.pipelines.upsample",
    "upsample_files": "pulse_sr.pipelines.upsample",
    "parse_operator": "pulse_sr.ops.operators",
    "Operator": "pulse_sr.ops.operators",
    "Measurement": "pulse_sr.ops.measurement",
    "BicubicDownscale": "pulse_sr.ops.resample",
    "bicubic_downscale": "pulse_sr.ops.resample",
    "load_model": "pulse_sr.model",
    "load_generator": "pulse_sr.model",
    "PulseModel": "pulse_sr.model",
    "upsample": "pulse_sr.search",
    "PulseOptions": "pulse_sr.search",
    "PulseResult": "pulse_sr.search",
    "StyleGAN1Config": "pulse_sr.networks.stylegan1",
    "StyleGAN1Generator": "pulse_sr.networks.stylegan1",
    "StyleGAN2Config": "pulse_sr.networks.stylegan2",
    "StyleGAN2Generator": "pulse_sr.networks.stylegan2",
    "StyleGAN3Generator": "pulse_sr.networks.stylegan3",
}


if TYPE_CHECKING:  # what IDEs and type checkers see; at run time these load on first use
    from . import runtime
    from .model import PulseModel, inspect_model, load_generator, load_model, save_model
    from .networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator
    from .networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator
    from .networks.stylegan3 import StyleGAN3Generator
    from .ops.measurement import Measurement
    from .ops.operators import Operator, parse_operator
    from .ops.resample import BicubicDownscale, bicubic_downscale
    from .pipelines.upsample import UpsampleJob, UpsampleReport, upsample_files
    from .search import PulseOptions, PulseResult, upsample
    from .search.prior import GaussianPrior


def __getattr__(name):
    if name == "runtime":
        return importlib.import_module("pulse_sr.runtime")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pulse_sr' has no attribute {name!r}")


__all__ = [
    # loading, saving and the model
    "load_model", "save_model", "inspect_model", "load_generator", "PulseModel", "GaussianPrior",
    # the search
    "upsample", "PulseOptions", "PulseResult",
    # pipelines
    "upsample_files", "UpsampleJob", "UpsampleReport",
    # forward operators
    "parse_operator", "Operator", "Measurement", "bicubic_downscale", "BicubicDownscale",
    # networks
    "StyleGAN1Config", "StyleGAN1Generator", "StyleGAN2Config", "StyleGAN2Generator", "StyleGAN3Generator",
    # process-wide switches
    "runtime",
    # errors
    "PulseError", "ModelFormatError", "UnsafePickleError", "InputSizeError", "InputImageError", "DownloadError",
    "OperatorSpecError", "OutputFolderError", "SettingsError",
]


def __dir__():
    # dir(pulse_sr) lists what it exports, lazy names included (PEP 562), and not its own imports.
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
