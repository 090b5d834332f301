"""NVIDIA's torch generators (stylegan2-ada-pytorch, stylegan3) built from their constructor keywords
and NVIDIA-named state: what the NVIDIA pickle, TF StyleGAN2 and rosinality readers all end with.

Every converter targets NVIDIA's torch layout (:mod:`.stylegan2_layout`), so one
builder serves them all: bound the size the keywords describe, build our network,
rename ``mapping.`` to ``mapping_network.``, load strictly.
"""

from __future__ import annotations

from typing import Dict

import torch

from ..errors import ModelFormatError
from .common import check_parameter_count, load_state_strict, stylegan3_parameter_bound


def network_kind(state_names) -> str:
    """'stylegan3' or 'stylegan2' from the tensor names, or ModelFormatError."""
    names = set(state_names)
    if "synthesis.input.freqs" in names:
        return "stylegan3"
    if "synthesis.b4.const" in names:
        return "stylegan2"
    raise ModelFormatError("the generator is neither a StyleGAN2 (synthesis.b4.const) nor a StyleGAN3 "
                           "(synthesis.input.freqs) network")


def _build_checked(kind: str, kwargs: dict, what: str):
    """The network ``kind`` for NVIDIA-style ``kwargs``, after bounding the size they describe."""
    try:
        if kind == "stylegan3":
            from ..networks.stylegan3 import StyleGAN3Generator
            check_parameter_count(stylegan3_parameter_bound(kwargs, what), what, "its constructor arguments")
            return StyleGAN3Generator.from_init_kwargs(kwargs)
        from ..networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator
        cfg = StyleGAN2Config.from_init_kwargs(kwargs, what)
        check_parameter_count(cfg.parameter_count(), what, "its constructor arguments")
        return StyleGAN2Generator(cfg)
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(str(exc) if str(exc).startswith(what) else f"{what}: {exc}") from None


def generator_from_state(kind: str, kwargs: dict, state: Dict[str, torch.Tensor], what: str):
    """Build the network ``kind`` from NVIDIA-style ``kwargs`` and load NVIDIA-named ``state`` strictly."""
    G = _build_checked(kind, kwargs, what)
    renamed = {("mapping_network." + k[len("mapping."):] if k.startswith("mapping.") else k): v.float()
               for k, v in state.items()}
    load_state_strict(G, renamed, what)
    return G.eval().requires_grad_(False)
