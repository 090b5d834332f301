"""``torch.save`` files (PULSE's ``.pt`` files, rosinality checkpoints, training checkpoints), read
weights-only, after checking what they declare against what they hold.

``torch.load(weights_only=True)`` runs no code, but it trusts the sizes a file
declares: a storage's element count is allocated before its bytes are read, and
a zip member is inflated whole. So, before torch sees a file:

* every zip member must be stored as torch writes them (a deflated member may
  inflate to at most :data:`MAX_INFLATION` times its size) and ``data.pkl`` at
  most :data:`MAX_PICKLE_BYTES`;
* the storages the pickle declares (its persistent ids: ``('storage', type, key,
  location, numel)``) may add up to at most the bytes the file holds: tensor
  bytes live in the file, so a file cannot honestly declare more;

both read from the pickle's opcodes alone, with a generic stack simulation
(``pickletools``), never by unpickling. Errors never advise ``weights_only=False``.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import IO, Sequence, Union

from ..errors import ModelFormatError, UnsafePickleError

MAX_PICKLE_BYTES = 64 << 20     # data.pkl holds structure, not tensor data
MAX_INFLATION = 4               # a deflated zip member may grow at most this much (torch stores members)
_SLACK = 1 << 20                # headers and alignment padding beyond the tensor bytes

_ELEMENT_BYTES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2,
                  "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
                  "BoolStorage": 1, "UntypedStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16}
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def declared_storage_bytes(stream: IO[bytes], limit_ops: int = 5_000_000) -> int:
    """The bytes of tensor data the pickle at ``stream`` declares through torch's persistent ids."""
    stack: list = []
    memo: dict = {}
    mark = object()
    total = 0
    n = 0
    for op, arg, _ in pickletools.genops(stream):
        n += 1
        if n > limit_ops:
            raise ModelFormatError(f"a pickle of over {limit_ops} opcodes")
        name = op.name
        if name == "STOP":
            break
        if name == "MARK":
            stack.append(mark)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1] if stack else None
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            if name == "TUPLE":
                i = len(stack) - 1 - stack[::-1].index(mark) if mark in stack else 0
                items, stack = stack[i + 1:], stack[:i]
            else:
                k = int(name[-1])
                items, stack = stack[len(stack) - k:], stack[:len(stack) - k]
            stack.append(tuple(items))
        elif name == "GLOBAL":
            stack.append(("global", str(arg)))
        elif name == "STACK_GLOBAL":
            a, b = (stack.pop() if stack else None), (stack.pop() if stack else None)
            stack.append(("global", f"{b} {a}"))
        elif name == "BINPERSID":
            pid = stack.pop() if stack else None
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[4], int):
                kind = pid[1][1].split(" ")[-1] if isinstance(pid[1], tuple) else ""
                total += max(0, pid[4]) * _ELEMENT_BYTES.get(kind, 8)
            stack.append(None)
        else:  # the opcode's own stack effect, with its literal argument where it pushes one
            before = op.stack_before
            if pickletools.markobject in before:
                i = len(stack) - 1 - stack[::-1].index(mark) if mark in stack else 0
                stack = stack[:i]
                before = [b for b in before if b is not pickletools.markobject and b is not pickletools.stackslice]
            if before and len(stack) >= len(before):
                del stack[len(stack) - len(before):]
            for _ in op.stack_after:
                stack.append(arg if op.arg is not None else None)
    return total


def check_torch_file(source: Union[Path, bytes], what: str) -> None:
    """Refuse a ``torch.save`` file (a path, or the bytes of one) whose pickle or zip members declare more
    than it can hold: see the module docstring. Files of another kind pass untouched."""
    data = source if isinstance(source, (bytes, bytearray)) else None
    path = None if data is not None else Path(source)
    size = len(data) if data is not None else path.stat().st_size
    opener = (lambda: io.BytesIO(data)) if data is not None else (lambda: open(path, "rb"))
    with opener() as f:
        head = f.read(4)
    try:
        if head == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data) if data is not None else path) as z:
                pkl = None
                for info in z.infolist():
                    if info.compress_type != zipfile.ZIP_STORED and \
                            info.file_size > MAX_INFLATION * max(info.compress_size, 1) + _SLACK:
                        raise ModelFormatError(f"{what}: zip member {info.filename} inflates from "
                                               f"{info.compress_size} to {info.file_size} bytes; refusing to read it")
                    if info.filename.endswith("data.pkl"):
                        if info.file_size > MAX_PICKLE_BYTES:
                            raise ModelFormatError(f"{what}: its data.pkl is {info.file_size >> 20} MB "
                                                   f"(at most {MAX_PICKLE_BYTES >> 20} MB)")
                        pkl = info
                if pkl is None:
                    return
                with z.open(pkl) as member:
                    declared = declared_storage_bytes(io.BytesIO(member.read(MAX_PICKLE_BYTES + 1)))
        else:
            with opener() as f:
                if f.read(len(_LEGACY_MAGIC)) != _LEGACY_MAGIC:
                    return
                f.seek(0)
                for _ in range(3):  # the magic number, the protocol version, the system info
                    pickle_skip(f)
                declared = declared_storage_bytes(f)
    except ModelFormatError:
        raise
    except Exception as exc:  # BadZipFile, a truncated pickle: torch.load reports these
        if isinstance(exc, (RecursionError, MemoryError)):
            raise ModelFormatError(f"{what}: not a readable torch file ({type(exc).__name__})") from None
        return
    if declared > size + _SLACK:
        raise ModelFormatError(f"{what}: declares {declared / 2 ** 20:.1f} MB of tensor data in a file of "
                               f"{size / 2 ** 20:.1f} MB; the file is corrupt or hostile")


def pickle_skip(f: IO[bytes]) -> None:
    """Move ``f`` past one pickle, by its opcodes (nothing is built)."""
    for op, _, _ in pickletools.genops(f):
        if op.name == "STOP":
            return


def torch_load_weights(path, allowed: Sequence[type] = (), noun: str = "weights file"):
    """``torch.load(weights_only=True)`` after :func:`check_torch_file`, with its failures turned into our
    error types (and none of torch's advice to load with ``weights_only=False``).

    ``allowed`` are classes the file may hold besides tensors and plain containers
    (rosinality's checkpoints: ``argparse.Namespace``); ``noun`` names the file in messages.
    """
    import torch

    from ..errors import PulseError
    from ..safe_paths import require_regular_file

    path = Path(path)
    try:
        require_regular_file(path, noun)
    except PulseError as exc:
        raise ModelFormatError(str(exc)) from None
    also = f" (beyond tensors and plain containers: {', '.join(c.__name__ for c in allowed)})" if allowed else ""
    try:
        check_torch_file(path, str(path))
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except ModelFormatError:
        raise
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        # torch names the refused global as 'GLOBAL module.name' (or 'Unsupported class' before 2.4).
        m = re.search(r"(?:GLOBAL|Unsupported class)\s+([\w.]+)", msg)
        if m:
            raise UnsafePickleError(f"{path}: {noun} asks for {m.group(1)}, which a weights-only load does "
                                    f"not allow{also}; refusing to load it") from None
        # torch explains a refused load over several lines; keep the one that says why, never its advice.
        lines = [line.strip() for line in msg.splitlines()
                 if line.strip() and not line.startswith("Check the documentation") and "weights_only" not in line]
        found = re.search(r"WeightsUnpickler error: \s*(.+)", msg)
        detail = (found.group(1) if found else lines[-1] if lines else "corrupt pickle").strip()[:200]
        if "weights_only" in detail:
            detail = "a global outside the weights-only allow-list"
        if re.search(r"unsupported class|unrecognized function|not an allowed|allow-list", detail, re.IGNORECASE):
            raise UnsafePickleError(f"{path}: {detail}; refusing to load it") from None
        raise ModelFormatError(f"{path}: not a readable torch {noun} ({detail})") from None
    except (RecursionError, MemoryError) as exc:
        raise ModelFormatError(f"{path}: not a readable torch {noun} ({type(exc).__name__}: nested too deeply "
                               f"or too large)") from None
    except Exception as exc:  # RuntimeError (bad zip), EOFError (truncated), ...
        first = (str(exc).strip().splitlines() or [""])[0]
        if "weights_only" in first:
            first = "refused by the weights-only loader"
        raise ModelFormatError(f"{path}: not a readable torch {noun} ({type(exc).__name__}: {first[:200]})") from None
