"""The generator contract PULSE searches, owned by one base class.

Every family (StyleGAN v1, StyleGAN2, StyleGAN3) subclasses :class:`Generator`
and is built from its config alone: ``Family(cfg)``. What the search, the prior,
the loaders and the pipelines may use, and nothing else:

* ``family`` ('stylegan1' | 'stylegan2' | 'stylegan3') and ``cfg``, a
  :class:`GeneratorConfig` whose ``to_dict()`` (with a ``family`` key) and
  ``from_dict()`` rebuild the architecture: what the project's own file stores;
* sizes: ``num_ws`` (W+ vectors), ``w_dim``, ``z_dim``, ``resolution``, and
  ``noise_resolutions`` (one entry per noise input; [] for StyleGAN3);
* ``mapping_network`` (z -> w, ending in the leaky ReLU 0.2 that the Gaussian
  fit inverts, supplement Sec. 2.4) and ``mapping(z)``, its output (B, w_dim);
  ``w_avg``, the running mean of W (truncation only);
* ``synthesize(ws, noise)``: W+ (B, num_ws, w_dim) and one (B or 1, 1, r, r)
  map or None per noise input -> image (B, C, R, R) in about [-1, 1];
* ``make_noise(batch, mode)`` ('random', 'const': the stored maps, 'zero') and
  ``sample(z, truncation_psi, truncation_cutoff, noise_mode)``;
* **intermediate features**: the synthesis is cut into ``num_stages`` stages
  (a StyleGAN v1 layer, a StyleGAN2 resolution block, StyleGAN3's input or one
  of its layers). ``synthesize_until(ws, noise, k)`` returns the activations
  after stage ``k`` (1-based) as a tuple of tensors, and
  ``synthesize_from(features, k, ws, noise)`` runs the stages after ``k`` on
  them, so ``synthesize_from(synthesize_until(ws, noise, k), k, ws, noise)`` is
  ``synthesize(ws, noise)``. A search can optimise those activations instead of
  (or besides) the latent, in the spirit of ILO (Daras et al. 2021).
  ``stage_resolution(k)`` says at what resolution stage ``k`` works.

Only StyleGAN v1 has several implementations (its epilogue, ``impl=``), so only
it has ``impl`` / ``set_impl``. Networks know nothing of files.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, List, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from .contract import truncated_ws

Features = Tuple[Optional[torch.Tensor], ...]


class GeneratorConfig:
    """Mixin for a family's config dataclass: a ``family`` tag and a JSON-able round trip."""

    family: ClassVar[str] = ""

    def to_dict(self) -> dict:
        """Every field, JSON-able, plus ``family``; :meth:`from_dict` rebuilds an equal config."""
        d = {"family": self.family}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict):
        """The config a :meth:`to_dict` gave (a missing ``family`` is taken as this one's)."""
        d = dict(d)
        family = d.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"a {family!r} config is not a {cls.family} one")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)


class Generator(nn.Module):
    """Base of every generator family: the contract above, in one place.

    A subclass sets ``family`` and ``config_class``, builds ``cfg``,
    ``mapping_network`` and ``synthesis`` in ``__init__(cfg)``, and implements
    ``noise_resolutions``, ``_stored_noise(i)``, ``_run(ws, noise, start, stop,
    features)`` (the stages ``start`` .. ``stop - 1``) and ``stage_resolution``.
    """

    family: ClassVar[str] = ""
    config_class: ClassVar[Type[GeneratorConfig]]
    default_truncation_cutoff: ClassVar[Optional[int]] = None
    default_noise_mode: ClassVar[str] = "random"

    cfg: GeneratorConfig

    # -- sizes -------------------------------------------------------------------

    @property
    def num_ws(self) -> int:
        return self.cfg.num_ws

    @property
    def w_dim(self) -> int:
        return self.cfg.w_dim

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @property
    def noise_resolutions(self) -> List[int]:
        raise NotImplementedError

    @property
    def num_stages(self) -> int:
        raise NotImplementedError

    def stage_resolution(self, stage: int) -> int:
        raise NotImplementedError

    # -- mapping -----------------------------------------------------------------

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_dim) -> (B, w_dim), not broadcast to W+."""
        return self.mapping_network(z)

    # -- noise -------------------------------------------------------------------

    def _stored_noise(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def make_noise(self, batch: int, mode: str = "random", generator: Optional[torch.Generator] = None,
                   device=None) -> List[Optional[torch.Tensor]]:
        """Per-layer noise maps: 'random', 'const' (the stored maps) or 'zero'; [] without noise inputs."""
        if mode not in ("random", "const", "zero"):
            raise ValueError(f"unknown noise mode {mode!r}; use random, const or zero")
        device = device or self.w_avg.device
        out: List[Optional[torch.Tensor]] = []
        for i, r in enumerate(self.noise_resolutions):
            if mode == "random":
                out.append(torch.randn(batch, 1, r, r, generator=generator, device=device))
            elif mode == "const":
                out.append(self._stored_noise(i).to(device).expand(batch, 1, r, r))
            else:
                out.append(torch.zeros(batch, 1, r, r, device=device))
        return out

    # -- synthesis ---------------------------------------------------------------

    def _checked(self, ws: torch.Tensor, noise) -> list:
        from .contract import assert_shape, check_noise

        assert_shape(ws, [None, self.num_ws, self.w_dim], "ws")
        if noise is None:
            noise = self.make_noise(ws.shape[0], "random", device=ws.device)
        if not self.noise_resolutions:
            if len(noise) != 0:
                raise ValueError(f"{self.family} takes no noise maps, got {len(noise)}")
            return []
        check_noise(noise, self.noise_resolutions, ws.shape[0])
        return list(noise)

    def _run(self, ws: torch.Tensor, noise: list, start: int, stop: int, features: Features):
        raise NotImplementedError

    def synthesize(self, ws: torch.Tensor, noise: Optional[Sequence[Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """(B, num_ws, w_dim) plus one (B, 1, r, r) noise map per noise input -> (B, C, R, R) in about [-1, 1].

        ``noise=None`` draws fresh random noise; a ``None`` entry disables that layer's noise.
        """
        return self._run(ws, self._checked(ws, noise), 0, self.num_stages, ())

    def _stage(self, stage: int) -> int:
        if not (isinstance(stage, int) and 1 <= stage <= self.num_stages):
            raise ValueError(f"stage must be from 1 to {self.num_stages}, got {stage!r}")
        return stage

    def synthesize_until(self, ws: torch.Tensor, noise: Optional[Sequence[Optional[torch.Tensor]]],
                         stage: int) -> Features:
        """The activations after stage ``stage`` (1-based), as a tuple of tensors (see the module docstring)."""
        out = self._run(ws, self._checked(ws, noise), 0, self._stage(stage), ())
        return out if isinstance(out, tuple) else (out,)

    def synthesize_from(self, features: Features, stage: int, ws: torch.Tensor,
                        noise: Optional[Sequence[Optional[torch.Tensor]]] = None) -> torch.Tensor:
        """The image from the activations after stage ``stage``: the stages after it, on ``features``."""
        return self._run(ws, self._checked(ws, noise), self._stage(stage), self.num_stages, tuple(features))

    @torch.no_grad()
    def sample(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = -1,
               noise_mode: Optional[str] = None) -> torch.Tensor:
        """Convenience: z (B, z_dim) -> image, with the truncation trick on the first ``truncation_cutoff``
        ws (None: all; default: the family's own, 8 for StyleGAN v1)."""
        cutoff = self.default_truncation_cutoff if truncation_cutoff == -1 else truncation_cutoff
        ws = truncated_ws(self, z, truncation_psi, cutoff)
        return self.synthesize(ws, self.make_noise(z.shape[0], noise_mode or self.default_noise_mode, device=z.device))
