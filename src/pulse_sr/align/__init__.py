"""Face detection and alignment of ordinary photos into a generator's crop frame.

PULSE only works on faces framed the way the generator was trained (Section 4:
"aligned and cropped" faces). A photo goes through three steps:

1. :func:`detect_faces` (:mod:`.detection`) finds every face and five landmarks;
2. :func:`align_face` (:mod:`.geometry`) warps a face into the model's frame with
   the least-squares similarity that takes its landmarks onto the model's
   template (:mod:`.templates`); official FFHQ models use :func:`ffhq_align`;
3. :func:`prepare_lr` (:mod:`.crops`) makes the LR input with the exact bicubic
   downscale PULSE's loss uses.
"""

from .crops import (FaceWindow, align_all, align_photo_for_model, demo_photo, face_windows,  # noqa: F401
                    frame_only, load_image, prepare_lr)
from .detection import Face, FaceDetectorUnavailable, detect_faces  # noqa: F401
from .geometry import align_face, apply_transform, ffhq_align, ffhq_quad, similarity_transform  # noqa: F401
from .templates import (FFHQ, LANDMARK_NAMES, Template, TemplateError, check_template,  # noqa: F401
                        crop_template_from, default_lr_size, load_template, template_for)
