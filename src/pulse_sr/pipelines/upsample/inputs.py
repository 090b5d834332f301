"""From an input file to what the search takes: the measured LR tensor and its forward operator.

An input file becomes one :class:`PreparedInput` (several with ``--align``,
one per face). The image is read once, as a tensor, and not converted again:
the search gets that tensor, and the report and the outputs are made from it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import List, Optional

import torch

from ...errors import InputImageError, PulseError
from ...images import load_rgb, pil_to_tensor, read_mask
from ...ops.operators import Compose, MaskReader, Warp, auto_operator, parse_operator
from .job import AlignMode, UpsampleJob

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PreparedInput:
    """One search: its output stem, the measurement y (3, h, w) in [0, 1], and A."""

    name: str
    lr: torch.Tensor
    operator: Compose


def prepare_inputs(path: Path, name: str, model, job: UpsampleJob,
                   read_mask_file: Optional[MaskReader] = None, data: Optional[bytes] = None) -> List[PreparedInput]:
    """The searches of one input file: one, or one per face with ``job.align``.

    With ``AlignMode.WARP`` a LR photo's own pixels around each face are the
    measurement, through the warp into the model's frame; ``RESAMPLE`` (or faces
    as large as the model's frame, or FFHQ-style crops) aligns and downscales each
    face first. Without an operator spec it is detected from the input: a mosaic
    gets ``box``, a grayscale input ``gray``, the rest ``bicubic`` or ``resize``.
    ``data`` are the file's bytes if the caller read them (the bytes the resume key hashes).
    Raises a PulseError naming ``path`` for anything that makes the input unusable.
    """
    img = load_rgb(path, data)
    reader = read_mask_file or read_mask
    if job.align is not AlignMode.OFF:
        if job.align is AlignMode.WARP and job.operator is None and job.lr_size is None:
            faces = _photo_windows(path, img, name, model)
            if faces is not None:
                return faces
        from ...align import align_photo_for_model

        crops = align_photo_for_model(img, model, job.lr_size)
        if not crops:
            raise InputImageError(f"{path}: no face found")
        faces = [pil_to_tensor(lr) for _, lr in crops]
        return [PreparedInput(f"{name}_face{k}", x, _operator_for(path, x, model, job.operator, reader))
                for k, x in enumerate(faces)]
    if job.lr_size is not None and img.size != (job.lr_size, job.lr_size):
        from PIL import Image
        img = img.resize((job.lr_size, job.lr_size), Image.BICUBIC)
    x = pil_to_tensor(img)
    return [PreparedInput(name, x, _operator_for(path, x, model, job.operator, reader))]


def _photo_windows(path: Path, img, name: str, model) -> Optional[List[PreparedInput]]:
    """With ``--align``: each face's own photo pixels, measured through the warp into the model's frame
    (ops.operators.Warp), so nothing is resampled before the search; None when the faces must be
    aligned and downscaled first (see :func:`pulse_sr.align.face_windows`)."""
    from ...align import face_windows

    windows, note = face_windows(img, model)
    if windows is None:
        if note:
            log.info("%s: %s", path, note)
        return None
    if not windows:
        raise InputImageError(f"{path}: {note or 'no face found'}")
    out = []
    for win in windows:
        x0, y0, w, h = win.box
        y = pil_to_tensor(img.crop((x0, y0, x0 + w, y0 + h)))
        out.append(PreparedInput(f"{name}_face{win.index}", y, Compose([Warp(win.to_frame, win.box, model.resolution)])))
    return out


def _operator_for(path: Path, x: torch.Tensor, model, spec: Optional[str], reader: MaskReader) -> Compose:
    try:
        if spec is None:
            return auto_operator(x, model.resolution)
        return parse_operator(spec, tuple(x.shape[-2:]), model.resolution, read_mask=reader)
    except PulseError as exc:
        raise type(exc)(f"{path}: {exc}") from None
