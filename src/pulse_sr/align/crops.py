"""From a photo to the model's input: aligned HR crops and their exact LR downscales.

:func:`prepare_lr` makes the LR input with the project's exact bicubic
downscale, so that PULSE's downscaling loss sees the same operator.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from ..errors import InputImageError, InputSizeError
from ..ops.resample import downscale_factor
from .detection import Face, FaceDetectorUnavailable, detect_faces
from .geometry import _as_rgb, align_face
from .templates import Template, default_lr_size, template_for


def load_image(path) -> Image.Image:
    """Read ``path`` as an 8-bit RGB PIL image, whatever its mode (see ``images.load_rgb``)."""
    from ..images import load_rgb

    return load_rgb(path)


def prepare_lr(image: Image.Image, lr_size: int) -> Image.Image:
    """Downscale a square HR crop to lr_size x lr_size with the project's exact
    bicubic operator (the one in PULSE's downscaling loss)."""
    import torch

    from ..ops.resample import bicubic_downscale

    image = _as_rgb(image)
    w, h = image.size
    if w != h or downscale_factor(w, lr_size) is None:
        raise InputSizeError(f"a {w}×{h} crop cannot be downscaled exactly to {lr_size}×{lr_size}; "
                             f"use an LR size that divides {w}")
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    y = bicubic_downscale(x, w // lr_size)[0].clamp(0, 1)
    return Image.fromarray((y * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy(), "RGB")


def frame_only(image, size: int, lr_size: int) -> Tuple[Image.Image, Image.Image]:
    """For an already framed (possibly tiny) face: centre-crop to a square and
    return (HR, LR). HR is a bicubic resize to ``size``; LR is the input itself
    at ``lr_size``, the exact bicubic downscale when ``lr_size`` divides it, or
    else the exact downscale of the HR image."""
    image = _as_rgb(image)
    w, h = image.size
    s = min(w, h)
    if (w, h) != (s, s):
        left, top = (w - s) // 2, (h - s) // 2
        image = image.crop((left, top, left + s, top + s))
    hr = image if s == size else image.resize((size, size), Image.BICUBIC)
    if s == lr_size:
        lr = image
    elif s > lr_size and downscale_factor(s, lr_size) is not None:
        lr = prepare_lr(image, lr_size)
    else:
        lr = prepare_lr(hr, lr_size)
    return hr, lr


def align_all(image, template: Template, size: int, lr_size: int) -> List[Tuple[Face, Image.Image, Image.Image]]:
    """Detect every face and return [(face, HR crop, LR crop)], largest first."""
    image = _as_rgb(image)
    out = []
    for face in detect_faces(image):
        hr = align_face(image, face, template, size)
        out.append((face, hr, prepare_lr(hr, lr_size)))
    return out


def align_photo_for_model(image, model, lr_size: Optional[int] = None) -> List[Tuple[Image.Image, Image.Image]]:
    """[(HR crop, LR crop)] for every face of a photo, in ``model``'s frame (a :class:`pulse_sr.PulseModel`)."""
    size = int(model.resolution)
    lr_size = lr_size or default_lr_size(size)
    return [(hr, lr) for _, hr, lr in align_all(image, template_for(model), size, lr_size)]


def demo_photo(model, lr_size: int):
    """The demo's real photo: scikit-image's astronaut (public domain), aligned
    to ``model``'s frame. Returns (LR, HR) as (3, h, w) tensors in [0, 1]."""
    try:
        from skimage.data import astronaut
    except ImportError as exc:
        raise FaceDetectorUnavailable(f"the photo demo needs scikit-image ({exc})") from None
    from ..images import pil_to_tensor

    crops = align_photo_for_model(Image.fromarray(astronaut()), model, lr_size)
    if not crops:
        raise InputImageError("no face found in the astronaut photo")
    hr, lr = crops[0]
    return pil_to_tensor(lr), pil_to_tensor(hr)


def face_frames(image, model) -> Optional[List[np.ndarray]]:
    """For every face of a photo, largest first, the 2×3 similarity from photo coordinates to
    ``model``'s frame (what :func:`align_face` warps with); None for FFHQ-style models, whose
    crop is not one similarity of the landmarks."""
    from .templates import landmark_points, template_points

    template = template_for(model)
    if isinstance(template, str):
        return None
    size = int(model.resolution)
    from .geometry import similarity_transform

    return [similarity_transform(landmark_points(face.landmarks), template_points(template, size))
            for face in detect_faces(_as_rgb(image))]
