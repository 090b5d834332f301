"""Choosing the torch device."""

from __future__ import annotations

import torch


def pick_device(device=None) -> torch.device:
    """The device asked for, else cuda if available, else mps, else cpu ("auto" = None)."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
