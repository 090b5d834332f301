"""Model files: tell the format from the first bytes, then read it with that format's module.

* :mod:`.sniff` -- :func:`detect_format`, by the first bytes alone;
* :mod:`.safetensors_file` -- the project's own ``.safetensors`` (bundled model,
  ``pulse train`` output), and the one safetensors header reader;
* :mod:`.tf_pickle` -- NVIDIA's official StyleGAN v1 TensorFlow pickle, through a
  restricted unpickler; :mod:`.tf_stylegan2` maps their TF StyleGAN2 pickles;
* :mod:`.nvidia_pickle` -- stylegan2-ada-pytorch / stylegan3 ``.pkl`` snapshots,
  read without executing the source they embed;
* :mod:`.rosinality` -- rosinality's stylegan2-pytorch checkpoints;
* :mod:`.pulse_pt` -- PULSE's converted ``synthesis.pt`` / ``mapping.pt`` and
  ``gaussian_fit.pt``;
* :mod:`.keys` -- the one missing/unknown-names check every loader uses;
* :mod:`.restricted_pickle` -- the allow-list unpickler both pickle readers use;
* :mod:`.infer` -- architecture constants from tensor shapes.

A new format is one new module here with a ``load_*(path) -> LoadedWeights``
function, one sniffing rule in :mod:`.sniff`, and one line in :func:`load_file`.
Nothing here runs code from a file. This package imports no torch until a file
is actually loaded, so ``pulse models list`` stays instant.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional


@dataclasses.dataclass
class LoadedWeights:
    """What a format module returns: the generator, and what the file said besides.

    The generator knows nothing of this; :func:`pulse_sr.load_model` turns it
    into a :class:`pulse_sr.PulseModel`.
    """

    generator: Any                                   # The network, in eval mode, gradients off.
    format: str                                      # Format name, as detect_format returns it.
    has_mapping: bool = True                         # False when the mapping weights are random (no file).
    gaussian_fit: Optional[Dict[str, Any]] = None    # {'mean', 'std'} if the file carries one.
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)  # Licence, crop template, ...


def load_file(path, mapping_path=None) -> LoadedWeights:
    """Read any supported model file; ``mapping_path`` goes with PULSE's ``synthesis.pt``."""
    from ..errors import ModelFormatError
    from .sniff import NVIDIA_PICKLE, PULSE_SR, PULSE_STATE_DICT, ROSINALITY, TF_PICKLE, detect_format

    path = Path(path)
    kind = detect_format(path)
    if kind == PULSE_SR:
        from .safetensors_file import load_saved_generator
        return load_saved_generator(path)
    if kind == TF_PICKLE:
        from .tf_pickle import load_tf_pickle
        return load_tf_pickle(path)
    if kind == NVIDIA_PICKLE:
        from .nvidia_pickle import load_nvidia_pickle
        return load_nvidia_pickle(path)
    if kind == ROSINALITY:
        from .rosinality import load_rosinality
        return load_rosinality(path)
    if kind == PULSE_STATE_DICT:
        from .pulse_pt import load_pulse_state_dicts
        return load_pulse_state_dicts(path, mapping_path)
    raise ModelFormatError(f"{path}: unsupported model format {kind!r}")  # pragma: no cover
