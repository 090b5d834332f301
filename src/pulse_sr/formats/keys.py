"""One check that a file's names match what a network expects, with one message.

Every loader maps names by pattern and must fail loudly when a name is left
over or a parameter is left unassigned (the rule of stylegan3's ``legacy.py``);
:func:`check_keys` is that check for all of them.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

from ..errors import ModelFormatError


def _listed(names, limit: Optional[int]) -> str:
    names = sorted(names)
    if limit is not None and len(names) > limit:
        return f"{names[:limit]}..."
    return str(names)


def check_keys(what: str, have: Iterable[str], want: Iterable[str], *, against: str, noun: str = "keys",
               ignored: Iterable[str] = (), limit: Optional[int] = None,
               shapes: Optional[Mapping[str, tuple]] = None) -> None:
    """Raise ModelFormatError unless ``have`` holds exactly the names ``want`` (plus any ``ignored``).

    ``what`` names the file, ``against`` the expected structure ("a 16px StyleGAN v1
    generator"). With ``shapes`` ({name: (file shape, model shape)}), names
    whose shapes differ are reported too.
    """
    have, want = set(have), set(want)
    missing = want - have
    unknown = have - want - set(ignored)
    bad = {k: v for k, v in (shapes or {}).items() if tuple(v[0]) != tuple(v[1])}
    if not (missing or unknown or bad):
        return
    parts = []
    if missing:
        parts.append(f"missing {noun} {_listed(missing, limit)}")
    if unknown:
        parts.append(f"unknown {noun} {_listed(unknown, limit)}")
    if bad:
        parts.append("shape mismatch " + ", ".join(
            f"{k}: file {tuple(f)} vs model {tuple(m)}" for k, (f, m) in sorted(bad.items())[:limit or None]))
    raise ModelFormatError(f"{what}: does not match {against}: " + "; ".join(parts))


def load_state_strict(module, state: Mapping, what: str) -> None:
    """Copy ``state`` into ``module``; any missing, unknown or misshapen entry is an error."""
    own = module.state_dict()
    shapes = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in set(own) & set(state)}
    check_keys(what, state, own, against="the architecture", limit=5, shapes=shapes)
    bad = sorted(k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all()))
    if bad:
        raise ModelFormatError(f"{what}: NaN or infinite values in {_listed(bad, 5)}; the weights are corrupt")
    module.load_state_dict(state, strict=True)
