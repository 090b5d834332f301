"""Crop conventions: where a model expects the eyes, nose and mouth of a face.

A template is ``{"left_eye": [x, y], "right_eye": ..., "nose": ...,
"mouth_left": ..., "mouth_right": ..., "size": R}`` in R-pixel output
coordinates, or :data:`FFHQ` for NVIDIA's FFHQ alignment. ``left_eye`` and
``mouth_left`` are the ones on the left of the image for an upright face.
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence, Union

import numpy as np

from ..errors import TemplateError

# Marker of models trained on FFHQ-aligned faces: NVIDIA's own alignment recipe.
FFHQ = "ffhq"

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

Template = Union[Mapping[str, object], str]



def landmark_points(landmarks: Mapping[str, Sequence[float]]) -> np.ndarray:
    missing = [k for k in LANDMARK_NAMES if k not in landmarks]
    if missing:
        raise TemplateError(f"landmarks need {', '.join(LANDMARK_NAMES)}; missing {', '.join(missing)}")
    pts = np.array([landmarks[k] for k in LANDMARK_NAMES], dtype=np.float64)
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise TemplateError("each landmark must be a finite [x, y] pair")
    return pts


def template_points(template: Mapping[str, object], size: int) -> np.ndarray:
    if "size" not in template:
        raise TemplateError("a crop template needs a 'size' (the side, in pixels, its points refer to)")
    return landmark_points(template) * (size / float(template["size"]))



def load_template(path) -> Template:
    """Read a crop template from a JSON file ({"left_eye": [x, y], ..., "size": R}),
    or return :data:`FFHQ` for the word ``ffhq``."""
    if str(path).lower() == FFHQ:
        return FFHQ
    from ..errors import PulseError
    from ..safe_paths import require_regular_file

    try:
        template = json.loads(require_regular_file(path, "crop template").read_text())
    except PulseError as exc:
        raise TemplateError(str(exc)) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise TemplateError(f"{path}: not a readable JSON crop template ({str(exc)[:200]})") from None
    return check_template(template, str(path))


def check_template(template, what: str = "crop template") -> dict:
    if not isinstance(template, Mapping):
        raise TemplateError(f"{what}: expected a JSON object with {', '.join(LANDMARK_NAMES)} and size")
    try:
        template_points(template, 1)
        size = int(template["size"])
    except (TemplateError, TypeError, ValueError) as exc:
        raise TemplateError(f"{what}: {exc}") from None
    if size < 1:
        raise TemplateError(f"{what}: size must be a positive number of pixels")
    return dict(template)


def template_for(model_or_metadata) -> Template:
    """The crop convention of a :class:`pulse_sr.PulseModel` (or of a metadata dict).

    A model that records ``crop_template`` uses it (the bundled model records
    the mean landmarks of its training crops). Official FFHQ models at 1024 px
    (NVIDIA's TF pickle, PULSE's .pt files) record nothing, and get
    :data:`FFHQ` alignment. Anything else raises :class:`TemplateError`.
    """
    m = model_or_metadata
    meta = m if isinstance(m, Mapping) else getattr(m, "metadata", {})
    domain = str(meta.get("domain", "faces"))
    if domain != "faces":
        name = meta.get("name") if isinstance(m, Mapping) else m.source
        raise TemplateError(f"{name or 'the model'} draws {domain}, not human faces, so face alignment does "
                            f"not apply; crop inputs the way its training images were framed (square, "
                            f"subject centred and filling the frame) and run without --align")
    if isinstance(m, Mapping):
        template = crop_template_from(m, int(m.get("resolution", 0) or 0))
        name = m.get("name", "the model")
    else:
        template, name = m.crop_template, m.source or "the model"
    if template is None:
        raise TemplateError(f"{name} records no crop convention (crop_template); "
                            "pass --template FILE.json (or --template ffhq)")
    return template


def crop_template_from(metadata: Mapping[str, object], resolution: int):
    """The crop convention a model file records, or :data:`FFHQ` for 1024-px models that record none."""
    if "crop_template" in metadata:
        return check_template(metadata["crop_template"], "the model's crop_template")
    if str(metadata.get("alignment", "")).lower() == FFHQ or resolution == 1024:
        return FFHQ
    return None


def default_lr_size(size: int) -> int:
    """8 px for small models, 16 px for 1024-px ones (the paper's 16 -> 1024)."""
    return max(8, size // 64)
