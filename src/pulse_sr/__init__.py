"""pulse-sr: PULSE (Menon, Damian et al., CVPR 2020) in PyTorch.

PULSE searches a generator's latent space for realistic high-resolution images
that downscale to a given low-resolution input. Its outputs are imaginary
people: plausible faces consistent with the input, never a recovery of the
real person, and not to be used for identification.
"""

from __future__ import annotations

import importlib

from .errors import (DownloadError, InputImageError, InputSizeError, ModelFormatError, PulseError,
                     UnsafePickleError)

__version__ = "0.1.0"

# Heavy names are imported on first use, so that `import pulse_sr` (and
# commands such as `pulse models list`) do not pay for importing torch.
_LAZY = {
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


def __getattr__(name):
    if name == "runtime":
        return importlib.import_module("pulse_sr.runtime")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pulse_sr' has no attribute {name!r}")


__all__ = sorted(_LAZY) + ["PulseError", "ModelFormatError", "UnsafePickleError", "InputSizeError",
                           "InputImageError", "DownloadError"]
