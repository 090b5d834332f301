"""Telling model files apart by their first bytes, before any parser touches them."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

from ..errors import ModelFormatError

# Format names returned by detect_format.
TF_PICKLE = "tf-pickle"
PULSE_STATE_DICT = "pulse-state-dict"
PULSE_SR = "pulse-sr"

# First bytes of a legacy (pre-zip) torch.save file: a protocol-2 pickle of the
# integer 0x1950a86a20f9469cfc6c that torch writes as its magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def detect_format(path) -> str:
    """Return 'tf-pickle', 'pulse-state-dict' or 'pulse-sr' by sniffing the first bytes.

    * 'pulse-state-dict': a ``torch.save`` file, zip (``PK``) or legacy pickle with
      torch's magic number (``synthesis.pt``, ``mapping.pt``, ``gaussian_fit.pt``);
    * 'tf-pickle': any other pickle (protocol 2+, first byte 0x80);
    * 'pulse-sr': a safetensors file (8-byte little-endian header length, then '{').

    Raises ModelFormatError for unreadable, empty or unrecognised files.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = path.stat().st_size
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise ModelFormatError(f"{path}: empty file, not a model")
    if head.startswith(b"PK\x03\x04"):
        return PULSE_STATE_DICT
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return PULSE_STATE_DICT
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return TF_PICKLE
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return PULSE_SR
    raise ModelFormatError(
        f"{path}: unrecognised model file (first bytes {head[:8].hex()}); expected an official "
        f"StyleGAN .pkl, a PULSE .pt state dict or a pulse-sr .safetensors file")
