"""Telling model files apart by their first bytes, before any parser touches them."""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

from ..errors import ModelFormatError, PulseError
from .common import Format
from .safetensors_file import read_header

# The formats detect_format returns (the one vocabulary is pulse_sr.formats.Format).
TF_PICKLE = Format.TF_PICKLE
NVIDIA_PICKLE = Format.NVIDIA_PICKLE
ROSINALITY = Format.ROSINALITY
PULSE_STATE_DICT = Format.PULSE_STATE_DICT
PULSE_SR = Format.PULSE_SR

# First bytes of a legacy (pre-zip) torch.save file: a protocol-2 pickle of the
# integer 0x1950a86a20f9469cfc6c that torch writes as its magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def detect_format(path) -> Format:
    """The file's format, by sniffing its bytes; nothing is unpickled.

    * 'rosinality': a ``torch.save`` file whose top-level dict has ``g_ema``
      (rosinality's stylegan2-pytorch checkpoints);
    * 'pulse-state-dict': any other ``torch.save`` file, zip (``PK``) or legacy
      pickle with torch's magic number (``synthesis.pt``, ``mapping.pt``, ``gaussian_fit.pt``);
    * 'nvidia-pickle': a pickle of ``torch_utils.persistence`` objects
      (stylegan2-ada-pytorch / stylegan3 ``.pkl``);
    * 'tf-pickle': any other pickle (protocol 2+, first byte 0x80): NVIDIA's
      TensorFlow StyleGAN / StyleGAN2 pickles;
    * 'pulse-sr': a safetensors file (8-byte little-endian header length, then '{').

    Raises ModelFormatError for unreadable, empty or unrecognised files.
    """
    path = Path(path)
    _regular_model_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            size = path.stat().st_size
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not head:
        raise ModelFormatError(f"{path}: empty file, not a model")
    if head.startswith(b"PK\x03\x04"):
        return ROSINALITY if _zip_has_g_ema(path) else PULSE_STATE_DICT
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return ROSINALITY if _legacy_has_g_ema(path) else PULSE_STATE_DICT
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL:
        return NVIDIA_PICKLE if _first_code_module(path).startswith("torch_utils") else TF_PICKLE
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return PULSE_SR
    raise ModelFormatError(
        f"{path}: unrecognised model file (first bytes {head[:8].hex()}); expected an NVIDIA StyleGAN, "
        f"StyleGAN2(-ADA) or StyleGAN3 .pkl, a rosinality stylegan2-pytorch .pt checkpoint, a PULSE .pt "
        f"state dict or a pulse-sr .safetensors file")


def _regular_model_file(path: Path) -> None:
    from ..safe_paths import require_regular_file

    if not path.exists():
        raise ModelFormatError(f"{path}: cannot read (no such file)")
    try:
        require_regular_file(path, "model file")
    except PulseError as exc:
        raise ModelFormatError(str(exc)) from None


# How far into a file the sniffers read pickle opcodes (tensor bytes are skipped past, not parsed).
_SNIFF_BYTES = 8 << 20


def _opcodes(f, limit: int = _SNIFF_BYTES) -> Iterator[Tuple[str, object]]:
    """(opcode name, argument) of the pickle at ``f``'s position, until STOP, an error or ``limit`` bytes."""
    start = f.tell()
    try:
        for op, arg, _ in pickletools.genops(f):
            yield op.name, arg
            if op.name == "STOP" or f.tell() - start > limit:
                return
    except Exception:  # truncated or not a pickle: what was read so far is all there is
        return


def _first_code_module(path: Path) -> str:
    """The module of the first global a pickle names other than plain containers ('' if none)."""
    strings = []
    with open(path, "rb") as f:
        for name, arg in _opcodes(f):
            if isinstance(arg, str):
                strings = (strings + [arg])[-2:]
            module = None
            if name == "GLOBAL" and isinstance(arg, str):
                module = arg.split(" ")[0]
            elif name == "STACK_GLOBAL" and len(strings) == 2:
                module = strings[0]
            if module and module not in ("collections", "builtins", "copyreg", "dnnlib.util"):
                return module
    return ""


def _has_g_ema(f) -> bool:
    """Whether the pickle at ``f`` names a 'g_ema' string (rosinality's generator key) near its start."""
    return any(arg == "g_ema" for _, arg in _opcodes(f))


def _zip_has_g_ema(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                return False
            with z.open(names[0]) as member:
                return _has_g_ema(io.BytesIO(member.read(_SNIFF_BYTES)))
    except (OSError, zipfile.BadZipFile):
        return False


def _legacy_has_g_ema(path: Path) -> bool:
    """Legacy ``torch.save``: magic, protocol and sys-info pickles, then the object's pickle."""
    with open(path, "rb") as f:
        for _ in range(3):
            for _ in _opcodes(f, 1 << 16):
                pass
        return _has_g_ema(f)


# A zip's end-of-central-directory record is 22 bytes plus a comment of at most
# 64 KiB, so it always lies in this many last bytes of a complete file.
_ZIP_TAIL = (1 << 16) + 22
_ZIP_EOCD = b"PK\x05\x06"


def looks_complete(path) -> bool:
    """Whether ``path`` ends where its own format says it should (stdlib only, no torch).

    Used when nothing else says how long a download should be (no Content-Length,
    no published size or sha256), so that a cut-off transfer is not taken for a
    complete file:

    * safetensors: the tensor data ends exactly at the end of the file;
    * zip (``torch.save``): an end-of-central-directory record closes the file;
    * pickle: the last byte is the STOP opcode.

    Anything else, including legacy ``torch.save`` files (a pickle followed by
    raw tensor data), gives False: unknown is not complete.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
            if head.startswith(b"PK\x03\x04"):
                return _zip_complete(f, size)
            if head[:1] == b"\x80":
                f.seek(size - 1)
                return f.read(1) == pickle.STOP
    except OSError:
        return False
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        return _safetensors_complete(path, header_len, size)
    return False


def _zip_complete(f, size: int) -> bool:
    f.seek(max(0, size - _ZIP_TAIL))
    tail = f.read()
    at = tail.rfind(_ZIP_EOCD)
    # Tensor data is stored uncompressed and may contain the signature by
    # chance; a real record's comment length runs exactly to the end of the file.
    while at >= 0:
        if at + 22 <= len(tail):
            (comment_len,) = struct.unpack("<H", tail[at + 20:at + 22])
            if at + 22 + comment_len == len(tail):
                return True
        at = tail.rfind(_ZIP_EOCD, 0, at)
    return False


def _safetensors_complete(path: Path, header_len: int, size: int) -> bool:
    try:
        header = read_header(path)
    except ModelFormatError:
        return False
    ends = [0]
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return False
        ends.append(offsets[1])
    return 8 + header_len + max(ends) == size
