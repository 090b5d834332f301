"""Model files: tell the format from the first bytes, then read it with that format's module.

* :mod:`.common` -- :class:`Format` (the one vocabulary of formats),
  :class:`LoadedWeights`, and the checks every reader shares (names, shapes,
  sizes, finite values, the parameter budget);
* :mod:`.sniff` -- :func:`detect_format`, by the first bytes alone;
* :mod:`.safetensors_file` -- the project's own ``.safetensors`` (every family:
  the bundled model, ``pulse train`` output, :func:`pulse_sr.save_model`), and the
  one safetensors header reader;
* :mod:`.tf_network` -- NVIDIA's TensorFlow network pickles, through a restricted
  unpickler; :mod:`.tf_pickle` maps StyleGAN v1's and :mod:`.tf_stylegan2` StyleGAN2's;
* :mod:`.nvidia_pickle` -- stylegan2-ada-pytorch / stylegan3 ``.pkl`` snapshots,
  read without executing the source they embed;
* :mod:`.rosinality` -- rosinality's stylegan2-pytorch checkpoints;
* :mod:`.nvidia_generators` and :mod:`.stylegan2_layout` -- NVIDIA's torch layout,
  which the NVIDIA, TF StyleGAN2 and rosinality readers all convert to, and the
  one builder from it;
* :mod:`.pulse_pt` -- PULSE's converted ``synthesis.pt`` / ``mapping.pt`` and
  ``gaussian_fit.pt``; :mod:`.infer` -- StyleGAN v1 sizes from tensor shapes;
* :mod:`.restricted_pickle` -- the allow-list unpickler both pickle readers use.

Imports point one way: this module imports the readers, the readers import
:mod:`.common` (and the layout modules), and :mod:`.common` imports no reader.
A new format is one module here with a ``load_*(path) -> LoadedWeights``, a
:class:`Format` member, one sniffing rule in :mod:`.sniff`, and one line in
:data:`_READERS`. Nothing here runs code from a file. This package imports no
torch until a file is actually loaded, so ``pulse models list`` stays instant.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

from ..errors import ModelFormatError
from .common import Format, LoadedWeights

__all__ = ["Format", "LoadedWeights", "load_file"]

# format -> (module, reader); readers are imported on first use.
_READERS = {
    Format.PULSE_SR: ("safetensors_file", "load_saved_generator"),
    Format.TF_PICKLE: ("tf_pickle", "load_tf_pickle"),
    Format.NVIDIA_PICKLE: ("nvidia_pickle", "load_nvidia_pickle"),
    Format.ROSINALITY: ("rosinality", "load_rosinality"),
    Format.PULSE_STATE_DICT: ("pulse_pt", "load_pulse_state_dicts"),
}

# What a registry entry may declare for its main file, and the formats a file of it may sniff as.
_DECLARED = {Format.TF_STYLEGAN2: Format.TF_PICKLE}


def load_file(path, mapping_path=None, expect: Optional[Format] = None) -> LoadedWeights:
    """Read any supported model file; ``mapping_path`` goes with PULSE's ``synthesis.pt``.

    ``expect`` is the format a registry entry declares: a file that sniffs as
    another format is refused (a wrong or replaced download), not read.
    """
    from .sniff import detect_format

    path = Path(path)
    kind = detect_format(path)
    if expect is not None and Format(expect) not in (Format.GAUSSIAN_FIT,):
        want = _DECLARED.get(Format(expect), Format(expect))
        if kind != want:
            raise ModelFormatError(f"{path}: the registry says this model is a {Format(expect).value} file, but "
                                   f"its bytes are a {kind.value} file; download it again (pulse models download "
                                   f"NAME --force)")
    if kind not in _READERS:  # pragma: no cover - detect_format returns only these
        raise ModelFormatError(f"{path}: unsupported model format {kind!r}")
    module, reader = _READERS[kind]
    read = getattr(importlib.import_module(f"{__name__}.{module}"), reader)
    try:
        return read(path, mapping_path) if kind == Format.PULSE_STATE_DICT else read(path)
    except (RecursionError, MemoryError) as exc:  # the last line of defence: one line, exit 2
        raise ModelFormatError(f"{path}: not a readable {kind.value} file ({type(exc).__name__}: nested too "
                               f"deeply or too large)") from None
