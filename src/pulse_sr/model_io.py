"""The project's own saved format: one ``.safetensors`` file with a JSON config.

The config (``StyleGAN1Config`` plus extras such as the crop convention) sits in
the safetensors metadata under ``pulse_sr_config``; the Gaussian fit, if known,
is stored as the tensors ``prior.mean`` and ``prior.std``. Weights may be
stored in float16 to keep bundled files small; they load as float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import torch

from .errors import ModelFormatError
from .networks.stylegan1 import StyleGAN1Config, StyleGAN1Generator

FORMAT_KEY = "pulse_sr_format"
FORMAT_NAME = "pulse-sr/stylegan1"
CONFIG_KEY = "pulse_sr_config"
EXTRAS_KEY = "pulse_sr_extras"


def save_generator(G: StyleGAN1Generator, path, gaussian_fit: Optional[dict] = None,
                   extras: Optional[dict] = None, half: bool = False) -> Path:
    """Write ``G`` (and optionally its Gaussian fit and extra metadata) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if gaussian_fit is not None:
        tensors["prior.mean"] = gaussian_fit["mean"].detach().float().cpu().contiguous()
        tensors["prior.std"] = gaussian_fit["std"].detach().float().cpu().contiguous()
    meta = {FORMAT_KEY: FORMAT_NAME, CONFIG_KEY: json.dumps(G.cfg.to_dict()),
            EXTRAS_KEY: json.dumps(extras or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise ModelFormatError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_saved_generator(path) -> Tuple[StyleGAN1Generator, Optional[dict], dict]:
    """Load a file written by :func:`save_generator`; returns (G, gaussian_fit or None, extras)."""
    from safetensors.torch import load_file

    meta = read_metadata(path)
    if meta.get(FORMAT_KEY) != FORMAT_NAME:
        raise ModelFormatError(f"{path}: safetensors file without pulse-sr metadata "
                               f"(expected {FORMAT_KEY}={FORMAT_NAME!r})")
    try:
        cfg = StyleGAN1Config.from_dict(json.loads(meta[CONFIG_KEY]))
        extras = json.loads(meta.get(EXTRAS_KEY, "{}"))
        tensors = load_file(str(path))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: bad pulse-sr config ({exc})") from exc
    except Exception as exc:
        raise ModelFormatError(f"{path}: cannot read tensors ({exc})") from exc
    fit = None
    if "prior.mean" in tensors:
        fit = {"mean": tensors.pop("prior.mean").float(), "std": tensors.pop("prior.std").float()}
    G = StyleGAN1Generator(cfg)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    load_state_strict(G, tensors, str(path))
    G.eval().requires_grad_(False)
    return G, fit, extras


def load_state_strict(G: torch.nn.Module, state: dict, what: str) -> None:
    """Copy ``state`` into ``G``; any missing, unexpected or misshapen entry is an error."""
    own = G.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if bad:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in bad[:5]))
        raise ModelFormatError(f"{what}: weights do not match the architecture: " + "; ".join(parts))
    G.load_state_dict(state, strict=True)
