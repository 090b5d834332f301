"""Where pulse-sr keeps downloaded weights and computed Gaussian fits."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PULSE_CACHE``, default ``~/.cache/pulse-sr``."""
    return Path(os.environ.get("PULSE_CACHE", "~/.cache/pulse-sr")).expanduser()
