"""Output names: one unique stem per input, decided from the whole input list.

``pulse upsample`` writes ``<name>.png`` (``<name>_<k>.png`` per sample),
``<name>_lr.png`` and ``<name>_residual.png``; with ``--align`` each face adds
``_face<k>``. ``pulse align`` names its crops the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Sequence


def sample_tags(samples: int) -> List[str]:
    """The per-sample part of output names: ``_0``, ``_1``, ... or nothing for one sample."""
    return [f"_{k}" for k in range(samples)] if samples > 1 else [""]


def _outputs(name: str, samples: int) -> List[str]:
    files = [f"{name}{t}{suffix}.png" for t in sample_tags(samples) for suffix in ("", "_lr", "_residual")]
    return files + ([f"{name}_spread.png"] if samples > 1 else [])


def plan_names(files: Sequence[Path], samples: int = 1, align: bool = False) -> Dict[Path, str]:
    """A unique output name for every input, decided from the whole list in order.

    The stem is used when the files it leads to (``<stem>.png``, ``<stem>_lr.png``,
    per sample, or ``<stem>_face<k>...`` with ``align``) collide with no other
    input's; otherwise the extension is added (``a_bmp``), then a counter.
    So ``a.png`` + ``a.bmp`` give ``a`` and ``a_bmp``, and ``b.png`` + ``b_lr.png``
    give ``b`` and ``b_lr_png`` (``b_lr.png`` is ``b``'s downscale).
    """
    claimed: List[tuple] = []  # (pattern, examples) of every name given so far
    names: Dict[Path, str] = {}

    def claim(name: str) -> tuple:
        if not align:
            files = _outputs(name, samples)
            return re.compile("|".join(map(re.escape, files)) + "$"), files
        # Face indices are not known before detection: claim the whole family of names.
        tag = r"(_\d+)?" if samples > 1 else ""
        pattern = re.compile(rf"{re.escape(name)}_face\d+({tag}(_lr|_residual)?|_spread)\.png$")
        examples = [f"{name}_face{i}{t}{lr}.png" for i in (0, 1, 10) for t in sample_tags(min(samples, 2))
                    for lr in ("", "_lr", "_residual")] + [f"{name}_face{i}_spread.png" for i in (0, 1, 10)]
        return pattern, examples

    def clashes(name: str) -> bool:
        pattern, examples = claim(name)
        return any(pattern.match(f) for _, other in claimed for f in other) or \
            any(other.match(f) for other, _ in claimed for f in examples)

    for path in files:
        if path in names:
            continue
        stem, ext = path.stem, path.suffix.lstrip(".").lower()
        candidates = [stem, f"{stem}_{ext}" if ext else f"{stem}_"]
        candidates += [f"{stem}_{ext}_{i}" for i in range(2, 10_000)]
        name = next(c for c in candidates if not clashes(c))
        names[path] = name
        claimed.append(claim(name))
    return names
