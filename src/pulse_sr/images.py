"""Reading and writing images as (3, H, W) float tensors in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


def load_rgb(path) -> Image.Image:
    """Open ``path`` as an RGB PIL image, or raise InputImageError with a one-line reason."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputImageError(f"{path}: is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InputImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1]."""
    arr = np.asarray(to_rgb(img), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> RGB PIL image (rounded, clamped)."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got {tuple(x.shape)}")
    arr = (x.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")


def read_image(path) -> torch.Tensor:
    return pil_to_tensor(load_rgb(path))


def save_image(x: torch.Tensor, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_pil(x).save(path)
    return path


def expand_inputs(inputs) -> List[Path]:
    """Files as given, plus the images inside any folders (sorted)."""
    out: List[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


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
