"""Geometry of alignment: similarity transforms, warping with bounded memory, and the FFHQ recipe.

Coordinates are continuous pixel coordinates: the image's top-left corner is
(0, 0) and pixel (i, j) covers [i, i + 1) x [j, j + 1), so its centre is
(i + 0.5, j + 0.5). Resizing an image then scales coordinates exactly, which is
what lets a template measured on 200-px crops be used at 64 px. Warping first
resamples only the region around the face, shrunk to about the output's scale,
so memory stays bounded for huge photos.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageFilter

from ..errors import InputImageError
from .templates import FFHQ, Template, TemplateError, landmark_points, template_points


def _as_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint8:
        raise InputImageError(f"expected an RGB PIL image or an (H, W, 3) uint8 array, got "
                              f"{arr.dtype} {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]), "RGB")


def similarity_transform(src_points, dst_points) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no
    reflection) taking ``src_points`` (N, 2) onto ``dst_points`` (N, 2).

    Umeyama (1991), "Least-squares estimation of transformation parameters
    between two point patterns", eqs. 40-42. Returns the 2x3 matrix M with
    ``dst ~= src @ M[:, :2].T + M[:, 2]``.
    """
    src = np.asarray(src_points, dtype=np.float64)
    dst = np.asarray(dst_points, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (N, 2) point arrays with N >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("source points are all the same point")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    # Eq. 43: flip the last singular direction when the best orthogonal matrix
    # would be a reflection.
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def apply_transform(M: np.ndarray, points) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    p = np.asarray(points, dtype=np.float64)
    return p @ M[:2, :2].T + M[:2, 2]


def _invert(M: np.ndarray) -> np.ndarray:
    A = np.linalg.inv(M[:2, :2])
    return np.hstack([A, (-A @ M[:2, 2])[:, None]])


def _compose(M2: np.ndarray, M1: np.ndarray) -> np.ndarray:
    """The affine map x -> M2(M1(x))."""
    return np.hstack([M2[:2, :2] @ M1[:2, :2], (M2[:2, :2] @ M1[:2, 2] + M2[:2, 2])[:, None]])


def _scale_of(M: np.ndarray) -> float:
    return math.sqrt(abs(np.linalg.det(M[:2, :2])))


def _warp(image: Image.Image, M: np.ndarray, size: int, pad_mode: str = "reflect",
          blur_pad: float = 0.0) -> Image.Image:
    """Render the size x size output whose pixel coordinates are M(input coordinates).

    Only the input region that the output sees is touched: it is resampled
    (with antialiasing) to about the output's scale first, so a face in an
    8000x6000 photo costs memory in proportion to the output, not the photo.
    Output pixels that fall outside the photo are filled by reflecting it;
    ``blur_pad`` > 0 also blurs the filled area and fades it to the median
    colour (the FFHQ recipe), with the blur's sigma given in output pixels.
    """
    W, H = image.size
    Minv = _invert(M)
    k = 1.0 / _scale_of(M)  # input pixels per output pixel
    corners = apply_transform(Minv, [[0, 0], [size, 0], [0, size], [size, size]])
    margin = 4.0 * max(k, 1.0) + 2.0  # room for the resampling filters
    x0, y0 = corners.min(0) - margin
    x1, y1 = corners.max(0) + margin
    # The part of that region inside the photo, on the integer grid.
    cx0, cy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    cx1, cy1 = min(W, math.ceil(x1)), min(H, math.ceil(y1))
    if cx1 <= cx0 or cy1 <= cy0:
        raise InputImageError("the face's crop lies entirely outside the image")
    shrink = max(k, 1.0)
    w2 = max(1, round((cx1 - cx0) / shrink))
    h2 = max(1, round((cy1 - cy0) / shrink))
    box = (cx0, cy0, cx1, cy1)
    if shrink > 1.0:
        region = image.resize((w2, h2), Image.LANCZOS, box=box, reducing_gap=3.0)
    else:
        region = image.crop(box)
    # Input coordinates -> region coordinates.
    sx, sy = w2 / (cx1 - cx0), h2 / (cy1 - cy0)
    to_region = np.array([[sx, 0.0, -cx0 * sx], [0.0, sy, -cy0 * sy]])
    # Pad so that the whole region the output sees exists, by reflection.
    pl = max(0, math.ceil((cx0 - x0) * sx))
    pt = max(0, math.ceil((cy0 - y0) * sy))
    pr = max(0, math.ceil((x1 - cx1) * sx))
    pb = max(0, math.ceil((y1 - cy1) * sy))
    if pl or pt or pr or pb:
        out_px = k * sx  # region pixels per output pixel
        if blur_pad > 0:
            # As in the FFHQ recipe, once any padding is needed, pad every side by
            # at least 30% of the crop so the fade to the median colour is gradual.
            least = round(0.3 * size * out_px)
            pl, pt, pr, pb = (max(p, least) for p in (pl, pt, pr, pb))
        arr = np.asarray(region)
        padded = np.pad(arr, ((pt, pb), (pl, pr), (0, 0)), mode=pad_mode)
        if blur_pad > 0:
            padded = _soften_padding(padded, (pl, pt, pr, pb), blur_pad * out_px)
        region = Image.fromarray(padded, "RGB")
        to_region[:, 2] += (pl, pt)
    to_out = _compose(M, _invert(to_region))
    inv = _invert(to_out)  # PIL wants output -> input
    return region.transform((size, size), Image.AFFINE, data=tuple(inv.reshape(-1)),
                            resample=Image.BICUBIC)


def _soften_padding(arr: np.ndarray, pads: Tuple[int, int, int, int], sigma: float) -> np.ndarray:
    """FFHQ's treatment of reflected padding (Karras et al. 2019, FFHQ dataset
    script): blend towards a blurred copy near and beyond the photo's edge, and
    towards the median colour further out, so reflections do not look like
    real content. ``arr`` is already small (about the output's size)."""
    pl, pt, pr, pb = pads
    h, w = arr.shape[:2]
    img = arr.astype(np.float32)
    x = np.arange(w, dtype=np.float32)[None, :, None]
    y = np.arange(h, dtype=np.float32)[:, None, None]

    def outward(dist_in, pad):
        # 1 at the padded border, 0 at the photo's edge, negative inside the photo.
        return 1.0 - dist_in / pad if pad > 0 else np.full_like(dist_in, -np.inf)

    mask = np.maximum(np.maximum(outward(x, pl), outward(w - 1 - x, pr)),
                      np.maximum(outward(y, pt), outward(h - 1 - y, pb)))
    blurred = np.asarray(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(max(sigma, 0.5))), np.float32)
    img += (blurred - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def align_face(image, face, template: Template,
               size: Optional[int] = None) -> Image.Image:
    """Warp ``face`` into the model's frame: a size x size RGB crop.

    ``template`` is a crop convention ``{"left_eye": [x, y], ..., "size": R}``
    (points in R-pixel output coordinates; ``size`` defaults to R), or
    :data:`FFHQ` for models trained on FFHQ (then :func:`ffhq_align`; ``size``
    defaults to 1024). The warp is the least-squares similarity from the five
    detected landmarks to the template's.
    """
    landmarks = getattr(face, "landmarks", face)
    if isinstance(template, str):
        if template != FFHQ:
            raise TemplateError(f"unknown crop convention {template!r}; use a template dict or {FFHQ!r}")
        return ffhq_align(image, landmarks, size or 1024)
    size = int(size or template.get("size", 0))
    if size < 1:
        raise TemplateError("give an output size, or a template with a 'size'")
    M = similarity_transform(landmark_points(landmarks), template_points(template, size))
    return _warp(_as_rgb(image), M, size)


def ffhq_quad(landmarks: Mapping[str, Sequence[float]]) -> np.ndarray:
    """The oriented crop square of the FFHQ recipe (Karras et al. 2019, FFHQ
    dataset alignment): corners (4, 2) for the output's top-left, bottom-left,
    bottom-right and top-right.

    The square is centred a little below the eyes (10% of the way to the
    mouth), its x axis follows the eye line corrected by the eye-to-mouth
    direction, and its half-side is the larger of 2x the eye distance and 1.8x
    the eye-to-mouth distance.
    """
    p = landmark_points(landmarks)
    eye_l, eye_r, mouth_l, mouth_r = p[0], p[1], p[3], p[4]
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    # Rotating eye_to_mouth by -90 degrees gives a second estimate of the eye line.
    x = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_align(image, landmarks: Mapping[str, Sequence[float]], size: int = 1024) -> Image.Image:
    """Align like the FFHQ dataset (for NVIDIA's official FFHQ models).

    Uses :func:`ffhq_quad`; parts of the square outside the photo are
    reflected, blurred and faded to the median colour as in the recipe. The
    recipe's shrink/crop/pad/transform steps are done by :func:`_warp` on the
    face's region only, so huge photos stay cheap; resampling differs from the
    original script's (bicubic after an antialiased shrink instead of bilinear
    at 4096 px and a downscale), which changes pixels slightly, not the frame.
    """
    quad = ffhq_quad(landmarks)
    corners = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64)
    M = similarity_transform(quad, corners)
    # The recipe blurs the padding with sigma = 2% of the quad's side.
    return _warp(_as_rgb(image), M, size, blur_pad=0.02 * size)
