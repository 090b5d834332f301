"""Loading a training set into memory as a uint8 tensor (N, 3, R, R).

Two sources: a folder of images (resized with Lanczos), or a *pack*: an ``.npz``
with the JPEG bytes of already-resized images (``data``, ``offsets``), which is
small enough to carry to a GPU machine.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
from PIL import Image

from ..errors import InputImageError
from ..images import IMAGE_SUFFIXES, load_rgb, to_rgb

log = logging.getLogger(__name__)


def list_images(folder) -> List[Path]:
    """The image files of ``folder`` (not recursive); FIFOs, folders and other special files are skipped,
    with a line each, as ``pulse upsample`` does."""
    from ..images import expand_inputs

    return [p for p in expand_inputs([folder])]


def resize_crop(img: Image.Image, resolution: int) -> np.ndarray:
    img = to_rgb(img)
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def load_folder(folder, resolution: int, limit: int = 0,
                progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    """(N, 3, R, R) uint8 images of ``folder``; ``progress(done, total)`` after each image."""
    files = list_images(folder)
    if limit:
        files = files[:limit]
    if not files:
        raise InputImageError(f"{folder}: no PNG/JPEG/WebP/BMP images found; train on a folder of aligned "
                              f"face crops or a .npz pack (pulse_sr.train.dataset.write_pack)")
    images = []
    for i, f in enumerate(files):
        try:
            images.append(resize_crop(load_rgb(f), resolution))
        except InputImageError as exc:  # one bad image is a line, not the end of the run
            log.warning("%s; skipped", exc)
        if progress is not None:
            progress(i + 1, len(files))
    if not images:
        raise InputImageError(f"{folder}: none of its {len(files)} images could be read")
    arr = np.stack(images)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def write_pack(folder, path, resolution: int, quality: int = 90, limit: int = 0) -> int:
    """Resize every image of ``folder`` and store the JPEG bytes in one ``.npz``."""
    files = list_images(folder)
    if limit:
        files = files[:limit]
    blobs = []
    for f in files:
        buf = io.BytesIO()
        Image.fromarray(resize_crop(Image.open(f), resolution)).save(buf, format="JPEG", quality=quality)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez(path, data=np.concatenate(blobs), offsets=offsets, resolution=np.int64(resolution),
             names=np.array([f.name for f in files]))
    return len(files)


def load_pack(path, resolution: int, limit: int = 0) -> torch.Tensor:
    """(N, 3, R, R) uint8 images of a pack written by :func:`write_pack` (only the first ``limit`` decoded)."""
    with np.load(path, allow_pickle=False) as z:
        data, offsets = z["data"], z["offsets"]
    n = len(offsets) - 1 if not limit else min(limit, len(offsets) - 1)
    imgs = [resize_crop(Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]].tobytes())), resolution)
            for i in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


def check_source(source) -> None:
    """Raise InputImageError (one line) unless ``source`` is a folder holding images or a ``.npz`` pack:
    checked before any network is built or any folder is made."""
    source = Path(source)
    if source.is_dir():
        if not any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in source.iterdir()):
            raise InputImageError(f"{source}: no PNG/JPEG/WebP/BMP images found; train on a folder of aligned "
                                  f"face crops or a .npz pack (pulse_sr.train.dataset.write_pack)")
    elif not (source.is_file() and source.suffix == ".npz"):
        raise InputImageError(f"{source}: not a folder of images or a .npz pack")


def load_dataset(source, resolution: int, limit: int = 0,
                 progress: Optional[Callable[[int, int], None]] = None) -> torch.Tensor:
    source = Path(source)
    if source.is_dir():
        return load_folder(source, resolution, limit, progress)
    if source.suffix == ".npz":
        return load_pack(source, resolution, limit)
    raise InputImageError(f"{source}: not a folder of images or a .npz pack")
