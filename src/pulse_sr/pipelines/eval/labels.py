"""Group labels for per-group success rates (the PULSE paper's Table 3 and model
card), and the Wilson score interval used for every success rate in a report.

Two label sources:

- ``"utkface"``: UTKFace file names, ``age_gender_race_timestamp.jpg``, give the
  groups ``gender`` (male, female), ``race`` (White, Black, Asian, Indian, Others),
  ``age`` (0-19, 20-39, 40-59, 60+) and ``race_gender`` (e.g. "Black female").
  A name that does not have exactly these four numeric fields in range (UTKFace
  has a few, such as ``61_1_20170109142408075.jpg.chip.jpg``) is put in group
  ``unknown`` for every attribute rather than guessed.
- a CSV file with a header row: the first column is the image file name (matched
  by base name), each other column is one grouping attribute, named by its header.
  Files missing from the CSV are ``unknown``.
"""

from __future__ import annotations

import csv
import math
import os
from typing import Dict, Iterable, Mapping, Optional, Tuple

from ...errors import LabelError

__all__ = [
    "UNKNOWN", "UTKFACE_GENDERS", "UTKFACE_RACES", "LabelError",
    "parse_utkface", "read_label_csv", "load_labels", "wilson_interval", "group_counts",
]

UNKNOWN = "unknown"
UTKFACE_GENDERS = ("male", "female")                              # 0, 1
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")   # 0..4
UTKFACE_MAX_AGE = 116
AGE_BINS = ((0, 19, "0-19"), (20, 39, "20-39"), (40, 59, "40-59"), (60, UTKFACE_MAX_AGE, "60+"))
UTKFACE_ATTRIBUTES = ("gender", "race", "age", "race_gender")

Labels = Dict[str, str]  # attribute → group



def _unknown_utkface() -> Labels:
    return {a: UNKNOWN for a in UTKFACE_ATTRIBUTES}


def parse_utkface(filename: str) -> Labels:
    """Groups of one UTKFace image from its name ``age_gender_race_timestamp.jpg``.

    Returns ``{"gender", "race", "age", "race_gender"}`` → group; every group is
    ``"unknown"`` when the name is malformed.
    """
    stem = os.path.basename(filename).split(".", 1)[0]
    parts = stem.split("_")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return _unknown_utkface()
    age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    if not (0 <= age <= UTKFACE_MAX_AGE and 0 <= gender < len(UTKFACE_GENDERS)
            and 0 <= race < len(UTKFACE_RACES)):
        return _unknown_utkface()
    g, r = UTKFACE_GENDERS[gender], UTKFACE_RACES[race]
    age_group = next(name for lo, hi, name in AGE_BINS if lo <= age <= hi)
    return {"gender": g, "race": r, "age": age_group, "race_gender": f"{r} {g}"}


def read_label_csv(path: str) -> Dict[str, Labels]:
    """Read a CSV of ``file,attr1[,attr2...]`` with a header; returns base name → labels."""
    from ...errors import PulseError
    from ...safe_paths import require_regular_file

    try:
        require_regular_file(path, "label CSV")
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except PulseError as exc:
        raise LabelError(str(exc)) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"{path}: cannot read the label CSV ({getattr(exc, 'strerror', None) or exc})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or len(rows[0]) < 2:
        raise LabelError(f"{path}: a label CSV needs a header row 'file,GROUP[,...]' "
                         f"and one row per image")
    attrs = [h.strip() or f"group{i}" for i, h in enumerate(rows[0][1:], start=1)]
    out: Dict[str, Labels] = {}
    for line, row in enumerate(rows[1:], start=2):
        name = os.path.basename(row[0].strip())
        if not name:
            raise LabelError(f"{path}:{line}: empty file name")
        values = [c.strip() for c in row[1:]] + [""] * (len(attrs) - len(row) + 1)
        out[name] = {a: (v or UNKNOWN) for a, v in zip(attrs, values)}
    return out


def load_labels(source: Optional[str], files: Iterable[str]) -> Dict[str, Labels]:
    """Labels for each file: ``source`` is ``None``, ``"utkface"`` or a CSV path.

    Returns file (as given) → attribute → group; empty dicts when ``source`` is None.
    """
    files = list(files)
    if source is None:
        return {f: {} for f in files}
    if source == "utkface":
        return {f: parse_utkface(f) for f in files}
    if not os.path.isfile(source):
        raise LabelError(f"--labels {source!r}: not 'utkface' and not an existing CSV file")
    table = read_label_csv(source)
    attrs = sorted({a for v in table.values() for a in v})
    return {f: table.get(os.path.basename(f), {a: UNKNOWN for a in attrs}) for f in files}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """Wilson score interval for a success rate (Wilson 1927); z = 1.96 gives 95 %.

    Unlike the normal approximation it stays inside [0, 1] and is sensible for
    rates near 0 or 1, which is where PULSE's success rates live. With n = 0 it
    returns the vacuous interval (0, 1).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def group_counts(outcomes: Mapping[str, Iterable[bool]], labels: Mapping[str, Labels]
                 ) -> Dict[str, Dict[str, Tuple[int, int]]]:
    """attribute → group → (successes, trials), pooling every outcome of every file."""
    out: Dict[str, Dict[str, Tuple[int, int]]] = {}
    for f, results in outcomes.items():
        results = [bool(r) for r in results]
        for attr, group in labels.get(f, {}).items():
            s, n = out.setdefault(attr, {}).get(group, (0, 0))
            out[attr][group] = (s + sum(results), n + len(results))
    return out
