"""The project's own format: one ``.safetensors`` file with a JSON config, for every generator family.

The generator's config (``cfg.to_dict()``, with its ``family``) sits in the
safetensors metadata under ``pulse_sr_config``, what else the model records
(crop convention, licence, training data) under ``pulse_sr_extras``, and
``pulse_sr_format`` says ``pulse-sr/<family>``. The Gaussian prior, if known, is
stored as the tensors ``prior.mean`` and ``prior.std``. Weights may be stored in
float16 to keep bundled files small; they load as float32. Files written before
the other families existed (``pulse-sr/stylegan1``, no ``family`` key) read as
StyleGAN v1, as they are.

:func:`read_metadata` parses the header with the standard library alone, so
that ``pulse models list`` never imports torch; it is the one header reader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional, Tuple

from ..errors import ModelFormatError, PulseError
from .common import Format, LoadedWeights

FORMAT_KEY = "pulse_sr_format"
FORMAT_PREFIX = "pulse-sr/"
FORMAT_NAME = "pulse-sr/stylegan1"  # what StyleGAN v1 files (the bundled model among them) say
CONFIG_KEY = "pulse_sr_config"
EXTRAS_KEY = "pulse_sr_extras"
MAX_HEADER_BYTES = 100_000_000


def read_header(path) -> dict:
    """The JSON header of a safetensors file: {tensor name: {dtype, shape, data_offsets}, "__metadata__": {...}}.

    Raises ModelFormatError for a file that is not safetensors.
    """
    from ..safe_paths import require_regular_file

    path = Path(path)
    try:
        require_regular_file(path, "safetensors file")
    except PulseError as exc:
        raise ModelFormatError(str(exc)) from None
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = path.stat().st_size
            if len(head) < 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", head)
            if not 2 <= n <= min(size - 8, MAX_HEADER_BYTES):
                raise ValueError(f"implausible header length {n}")
            header = json.loads(f.read(n))
        _check_json_depth(header, str(path))
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except RecursionError:
        raise ModelFormatError(f"{path}: not a readable safetensors file (its header nests too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: not a readable safetensors file ({str(exc)[:200]})") from exc
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path}: not a readable safetensors file (header is not a JSON object)")
    return header


MAX_JSON_DEPTH = 100


def _check_json_depth(obj, what: str) -> None:
    """ModelFormatError if JSON containers nest deeper than MAX_JSON_DEPTH (no torch needed, no recursion)."""
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ModelFormatError(f"{what}: JSON nested over {MAX_JSON_DEPTH} deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def read_metadata(path) -> dict:
    """The string metadata of a safetensors file (``__metadata__``), {} if none."""
    meta = read_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{path}: not a readable safetensors file (__metadata__ is not an object)")
    return meta


def read_config(path) -> dict:
    """The generator config recorded in a pulse-sr file, as a dict (no torch needed)."""
    meta = read_metadata(path)
    try:
        config = json.loads(meta[CONFIG_KEY])
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: no readable {CONFIG_KEY} in the metadata ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFormatError(f"{path}: {CONFIG_KEY} is not a JSON object")
    return config


def config_resolution(config: dict) -> int:
    """The output resolution a stored config records (``resolution`` or NVIDIA's ``img_resolution``)."""
    return int(config.get("resolution") or config["img_resolution"])


def read_pulse_header(path) -> Tuple[dict, dict]:
    """(config, extras) of a pulse-sr file, from its header alone (no torch, no tensor read)."""
    meta = read_metadata(path)
    fmt = meta.get(FORMAT_KEY, "")
    if not (isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX)):
        raise ModelFormatError(f"{path}: safetensors file without pulse-sr metadata "
                               f"(expected {FORMAT_KEY}=pulse-sr/<family>)")
    try:
        config = json.loads(meta[CONFIG_KEY])
        extras = json.loads(meta.get(EXTRAS_KEY, "{}"))
        _check_json_depth(config, str(path))
        _check_json_depth(extras, str(path))
    except RecursionError:
        raise ModelFormatError(f"{path}: bad pulse-sr config (nested too deeply)") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: bad pulse-sr config ({str(exc)[:200]})") from exc
    if not (isinstance(config, dict) and isinstance(extras, dict)):
        raise ModelFormatError(f"{path}: bad pulse-sr config (not a JSON object)")
    family = config.get("family", "stylegan1")
    if fmt != FORMAT_PREFIX + str(family):
        raise ModelFormatError(f"{path}: its format says {fmt!r} but its config is a {family!r} generator")
    return config, extras


def save_generator(G, path, gaussian_fit=None, extras: Optional[dict] = None, half: bool = False, *,
                   prior=None) -> Path:
    """Write ``G`` (any family) and optionally its Gaussian prior and extra metadata to ``path``, atomically.

    ``prior`` (or, by its older name, ``gaussian_fit``) is a GaussianPrior or a ``{'mean', 'std'}`` dict.
    """
    import os

    from safetensors.torch import save

    from ..safe_paths import create_new

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    fit = prior if prior is not None else gaussian_fit
    if fit is not None:
        tensors["prior.mean"] = fit["mean"].detach().float().cpu().contiguous()
        tensors["prior.std"] = fit["std"].detach().float().cpu().contiguous()
    meta = {FORMAT_KEY: FORMAT_PREFIX + G.family, CONFIG_KEY: json.dumps(G.cfg.to_dict()),
            EXTRAS_KEY: json.dumps(extras or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with create_new(tmp) as f:  # a new file, never through a planted link; then one rename
            f.write(save(tensors, metadata=meta))
        os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    return path


def load_saved_generator(path) -> LoadedWeights:
    """Load a file written by :func:`save_generator`, with its Gaussian prior and extras if stored."""
    from safetensors.torch import load_file

    from ..networks import config_from_dict
    from .common import build_checked, load_state_strict

    header = read_header(path)
    config, extras = read_pulse_header(path)
    try:
        cfg = config_from_dict(config)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFormatError(f"{path}: bad pulse-sr config ({exc})") from exc
    # Everything is checked against the header before a byte of tensor data is read.
    G = build_checked(cfg, str(path))
    _check_header_shapes(header, G, str(path))
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt data
        raise ModelFormatError(f"{path}: cannot read tensors ({exc})") from exc
    fit = None
    if "prior.mean" in tensors:
        fit = {"mean": tensors.pop("prior.mean").float(), "std": tensors.pop("prior.std").float()}
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    load_state_strict(G, tensors, str(path))
    return LoadedWeights(G.eval().requires_grad_(False), format=Format.PULSE_SR, gaussian_fit=fit, metadata=extras)


def _check_header_shapes(header: dict, G, what: str) -> None:
    from .common import check_keys

    want = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    fit = {"prior.mean": (G.w_dim,), "prior.std": (G.w_dim,)}
    have = {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if "prior.mean" in have or "prior.std" in have:
        want = {**want, **fit}
    shapes = {k: (have[k], want[k]) for k in set(have) & set(want)}
    check_keys(what, have, want, against="the architecture in its own config", limit=5, shapes=shapes)
