"""``load_generator``: one entry point for every weight format and registry name.

Formats (see ``legacy.py`` and ``model_io.py``):
* the project's own ``.safetensors`` (bundled model and ``pulse train`` output);
* NVIDIA's official StyleGAN v1 TF pickle, read without TensorFlow;
* PULSE's converted ``synthesis.pt`` (+ ``mapping.pt``) state dicts.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelFormatError
from .networks.stylegan1 import StyleGAN1Generator


def _load_path(path: Path, mapping_path=None) -> StyleGAN1Generator:
    from . import legacy
    from .model_io import load_saved_generator

    kind = legacy.detect_format(path)
    if kind == "pulse-sr":
        G, fit, extras = load_saved_generator(path)
        G.gaussian_fit, G.extras = fit, extras
    elif kind == "tf-pickle":
        G = legacy.load_tf_pickle(path)
    elif kind == "pulse-state-dict":
        G = legacy.load_pulse_state_dicts(path, mapping_path)
    else:  # pragma: no cover - detect_format raises for anything else
        raise ModelFormatError(f"{path}: unsupported model format {kind!r}")
    return G


def load_generator(path_or_name, mapping_path=None, gaussian_fit_path=None) -> StyleGAN1Generator:
    """Load a generator from a file path or a registry name (e.g. ``"default"``).

    ``mapping_path`` goes with PULSE's ``synthesis.pt``; ``gaussian_fit_path``
    (PULSE's ``gaussian_fit.pt``) overrides the fit stored with the model.
    The generator comes back in eval mode with gradients off.
    """
    from .registry import resolve_model

    files = resolve_model(str(path_or_name))
    main = Path(files["main"])
    mapping_path = mapping_path or files.get("mapping")
    G = _load_path(main, mapping_path)
    fit_path = gaussian_fit_path or files.get("gaussian_fit")
    if fit_path:
        from .legacy import load_gaussian_fit_pt
        from .prior import validate_fit
        G.gaussian_fit = validate_fit(load_gaussian_fit_pt(fit_path), G.w_dim, str(fit_path))
    G.source = str(path_or_name)
    return G.eval().requires_grad_(False)
