"""Reading and writing images as (3, H, W) float tensors in [0, 1]."""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_MAX_PIXELS = 40_000_000


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB: EXIF orientation applied, alpha composited on white,
    grayscale replicated, 16-bit scaled to 8-bit, CMYK converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        # Known 16-bit data: scale exactly (65535 -> 255), even for a dark image.
        arr = np.asarray(img, dtype=np.uint32)
        img = Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), "L")
    if img.mode == "I":
        # 32-bit integer mode carries no bit depth: 8-bit values stay, larger ones are 16-bit.
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def max_pixels() -> int:
    """The largest image, in pixels, that is decoded: ``$PULSE_MAX_PIXELS``, default 40 MP.

    A 13000² PNG is 530 KB on disk but 6.9 GB once decoded; the header says its
    size, so the check costs nothing.
    """
    try:
        return int(float(os.environ.get("PULSE_MAX_PIXELS", DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def _special_kind(st_mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(st_mode):
            return name
    return "not a regular file"


def read_input_bytes(path) -> bytes:
    """The bytes of an input file, read once (a regular file only; InputImageError otherwise): what a
    pipeline decodes and also what its resume key hashes, so a file swapped mid-run cannot be recorded
    under the other file's key."""
    path = Path(path)
    _check_regular(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _check_regular(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such file") from None
    except OSError as exc:  # a symlink loop, a permission problem, ...
        raise InputImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputImageError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise InputImageError(f"{path}: is {_special_kind(st.st_mode)}, not an image file; only regular files are read")


def load_rgb(path, data: Optional[bytes] = None) -> Image.Image:
    """Open ``path`` as an RGB PIL image, or raise InputImageError with a one-line reason.

    Only regular files are opened (a FIFO named ``x.png`` would block forever),
    and only images of at most :func:`max_pixels` pixels are decoded. For an
    animated or multi-page file the first frame is used, and a line saying so
    is logged. ``data`` are the file's bytes when the caller has read them
    (:func:`read_input_bytes`); ``path`` then names them in messages.
    """
    path = Path(path)
    if data is None:
        _check_regular(path)
    limit = max_pixels()
    source = path if data is None else io.BytesIO(data)
    try:
        with Image.open(source) as img:
            w, h = img.size
            if w * h > limit:
                raise InputImageError(f"{path}: {w}×{h} is {w * h / 1e6:.0f} MP, over the {limit / 1e6:.0f} MP limit; "
                                      f"shrink it first or raise PULSE_MAX_PIXELS")
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                log.info("%s: %d frames; used the first", path, frames)
            img.load()
            return to_rgb(img)
    except InputImageError:
        raise
    except PermissionError as exc:
        raise InputImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        said = str(exc).replace(repr(source), str(path)) if data is not None else str(exc)
        raise InputImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {said[:200]})") from None


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_mask(path) -> torch.Tensor:
    """A mask file (white = the pixels that count) as a (3, h, w) tensor in [0, 1], read like an input.

    The ``mask:PATH`` operator term gets its pixels from here (ops/ reads no files).
    """
    return pil_to_tensor(load_rgb(path))


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> RGB PIL image (rounded, clamped)."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got {tuple(x.shape)}")
    arr = (x.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")


def read_image(path) -> torch.Tensor:
    return pil_to_tensor(load_rgb(path))


def save_image(x, path, text: Optional[dict] = None) -> Path:
    """Write a (3, H, W) tensor in [0, 1] or a PIL image to ``path``, atomically.

    The image goes to a temporary name in the same folder and is renamed into
    place, so a full disk or a kill never leaves a truncated file at ``path``.
    ``text`` becomes PNG text chunks (provenance).
    """
    from .safe_paths import create_new

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = x if isinstance(x, Image.Image) else tensor_to_pil(x)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    kwargs = {}
    if text:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for key, value in text.items():
            info.add_itxt(key, str(value))
        kwargs["pnginfo"] = info
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    try:
        # Created exclusively, never through a link planted at the temporary name (see safe_paths);
        # the rename swaps directory entries, so a link at ``path`` is replaced, not written through.
        with create_new(tmp) as f:
            img.save(f, format=fmt, **kwargs)
        os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    return path


def heat_map(x):
    """A (h, w) tensor in [0, 1] as a black → red → yellow → white (3, h, w) image."""
    x = x.clamp(0, 1)
    return torch.stack([(x * 2).clamp(0, 1), (x * 2 - 0.5).clamp(0, 1), (x * 2 - 1).clamp(0, 1)])


RESIDUAL_GAIN = 8  # |A(x) − y| × 8 in residual maps


def residual_map(downscaled, lr, gain: float = RESIDUAL_GAIN):
    """|A(x) − y| averaged over channels, amplified by ``gain``, as a heat map (3, h, w)."""
    return heat_map((downscaled - lr).abs().mean(0) * gain)


def enlarge(x, at_least: int = 128):
    """Nearest-neighbour upscale of a (C, h, w) tensor by the smallest integer making it ``at_least`` px."""
    import torch.nn.functional as F

    f = max(1, -(-at_least // max(x.shape[-2:])))
    return F.interpolate(x[None], scale_factor=f, mode="nearest")[0] if f > 1 else x


def expand_inputs(inputs) -> List[Path]:
    """Files as given, plus the images inside any folders (sorted, not recursive).

    What a folder holds besides PNG/JPEG/WebP/BMP files (other files, subfolders,
    FIFOs, broken or looping links) is skipped with a line in the log. Files
    named explicitly are kept, so that reading them reports what is wrong.
    """
    out: List[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            out.append(p)
            continue
        try:
            entries = sorted(p.iterdir())
        except OSError as exc:  # an unreadable folder is one bad input, not the end of the batch
            log.info("skipped %s: cannot be read (%s)", p, exc.strerror or exc)
            continue
        for f in entries:
            why = _skip_reason(f)
            if why is None:
                out.append(f)
            else:
                log.info("skipped %s: %s", f, why)
    return out


def _skip_reason(f: Path) -> Optional[str]:
    try:
        st = f.stat()
    except OSError as exc:  # broken link, link loop
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder (folders are not searched recursively)"
    if not stat.S_ISREG(st.st_mode):
        return f"{_special_kind(st.st_mode)}, not an image file"
    if f.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not a {'/'.join(s[1:].upper() for s in IMAGE_SUFFIXES if s != '.jpeg')} file"
    return None


def make_grid(rows: List[List[torch.Tensor]], pad: int = 2, fill: float = 1.0) -> torch.Tensor:
    """Rows of (3, H, W) tiles of one size -> one (3, H', W') image with padding."""
    h, w = rows[0][0].shape[1:]
    ncol = max(len(r) for r in rows)
    grid = torch.full((3, len(rows) * (h + pad) + pad, ncol * (w + pad) + pad), fill)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[:, y:y + h, x:x + w] = tile.clamp(0, 1)
    return grid
