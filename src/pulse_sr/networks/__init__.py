"""Generator networks: StyleGAN v1, StyleGAN2 and StyleGAN3, on one base (:mod:`.base`), by family name.

Each family is a module (:mod:`.stylegan1`, :mod:`.stylegan2`, :mod:`.stylegan3`)
with a config and a :class:`~pulse_sr.networks.base.Generator` subclass; the
functions here find them by their ``family`` tag, importing only the one asked
for (StyleGAN3's filter design needs SciPy). Networks know nothing of files.
"""

from __future__ import annotations

from typing import Type

FAMILIES = ("stylegan1", "stylegan2", "stylegan3")
_CLASSES = {"stylegan1": "StyleGAN1Generator", "stylegan2": "StyleGAN2Generator", "stylegan3": "StyleGAN3Generator"}


def generator_class(family: str) -> Type:
    """The generator class of a family name."""
    if family not in _CLASSES:
        raise ValueError(f"unknown generator family {family!r}; the families are {', '.join(FAMILIES)}")
    if family == "stylegan1":
        from . import stylegan1 as module
    elif family == "stylegan2":
        from . import stylegan2 as module
    else:
        from . import stylegan3 as module
    return getattr(module, _CLASSES[family])


def config_from_dict(d: dict):
    """Any family's config from its ``to_dict()`` (no ``family`` key: StyleGAN v1, as older files store it)."""
    return generator_class(d.get("family", "stylegan1")).config_class.from_dict(d)


def build_generator(cfg):
    """The generator a config describes, with fresh weights."""
    return generator_class(cfg.family)(cfg)


__all__ = ["FAMILIES", "generator_class", "config_from_dict", "build_generator"]
