"""From a photo to the model's input: aligned HR crops and their exact LR downscales.

:func:`prepare_lr` makes the LR input with the project's exact bicubic
downscale, so that PULSE's downscaling loss sees the same operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class FaceWindow:
    """Where a face's model frame lies in a photo: the similarity from photo to frame coordinates
    and the photo box (x0, y0, w, h) of the pixels it covers."""

    index: int                      # the face's rank by size, largest first
    to_frame: np.ndarray            # (2, 3) photo -> model frame
    box: Tuple[int, int, int, int]  # x0, y0, w, h in the photo


def face_windows(image, model) -> Tuple[Optional[List[FaceWindow]], str]:
    """For a LR photo: every face's window, so that the photo's own pixels can be the measurement.

    Returns (windows, note). Windows are None when a face spans more photo pixels than the model's
    frame (the note says so) or when the model's crop is FFHQ's (not one similarity of the
    landmarks): then faces are aligned and downscaled first. [] when the photo has no face (or, with a
    note, when every face's frame covers under 2×2 photo pixels, which are left out).
    """
    frames = face_frames(image, model)
    if frames is None:
        return None, ""
    R = int(model.resolution)
    W, H = _as_rgb(image).size
    out = []
    for k, M in enumerate(frames):
        scale = math.sqrt(abs(np.linalg.det(M[:, :2])))  # model pixels per photo pixel
        if scale < 1:
            return None, (f"face {k} spans {R / scale:.0f} px, more than the model's {R}: aligned and downscaled "
                          f"to the model's frame first")
        A = np.linalg.inv(M[:, :2])
        corners = (np.array([[0, 0], [R, 0], [0, R], [R, R]], dtype=np.float64) - M[:, 2]) @ A.T
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(W, int(x1)), min(H, int(y1))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            out.append(FaceWindow(k, M, (x0, y0, x1 - x0, y1 - y0)))
    return out, "the faces' frames fall outside the photo" if frames and not out else ""
