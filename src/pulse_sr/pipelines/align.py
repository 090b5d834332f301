"""``pulse align`` as library code: detect and align the faces of photos (files or folders) into a model's frame.

For every face: ``<stem>_face<k>.png`` (the aligned HR crop, largest face first)
and ``<stem>_face<k>_lr.png`` (its exact bicubic downscale); with ``detect=False``,
``<stem>.png`` and ``<stem>_lr.png`` for inputs that are already framed faces.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, List, Optional

from ..diagnostics import collect
from ..errors import EXIT_ERROR, FaceDetectorUnavailable, PulseError, exit_code
from ..images import expand_inputs, load_rgb, save_image
from .upsample.names import plan_names
from .upsample.report import FATAL_WRITE_ERRORS, check_out_dir, make_out_dir

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AlignSummary:
    """What ``pulse align`` did: the crops written per photo, the photos that failed or had no face."""

    written: List[dict] = dataclasses.field(default_factory=list)   # {"input", "outputs": [file names]}
    errors: List[dict] = dataclasses.field(default_factory=list)    # {"input", "error"}
    no_face: List[str] = dataclasses.field(default_factory=list)
    stopped: Optional[str] = None                                   # the folder became unwritable
    exit_code: int = 0
    notes: List[str] = dataclasses.field(default_factory=list)      # the lines it logged


def align_files(inputs, out_dir, template, size: int, lr_size: int, *, detect: bool = True,
                on_written: Optional[Callable[[Path, List[str]], None]] = None) -> AlignSummary:
    """Align every photo in ``inputs`` (files, or folders of images) and write the crops to ``out_dir``.

    ``template`` is a crop template or ``"ffhq"`` (ignored with ``detect=False``).
    Inputs get unique names as in ``pulse upsample``; ``out_dir`` may not hold inputs,
    and images are written atomically. Problems are logged; ``on_written(photo, [file names])``
    follows each photo done. Raises :class:`pulse_sr.errors.FaceDetectorUnavailable` when dlib is missing.
    """
    summary = AlignSummary()
    with collect(summary.notes):
        _align_all(Path(out_dir), expand_inputs(inputs), template, (size, lr_size), detect, on_written, summary)
    summary.exit_code = EXIT_ERROR if summary.stopped else exit_code(
        bad_input=bool(summary.errors), not_found=bool(summary.no_face))
    return summary


def _align_all(out_dir: Path, files: List[Path], template, sizes, detect: bool, on_written,
               summary: AlignSummary) -> None:
    from .. import align as A

    size, lr_size = sizes
    check_out_dir(out_dir, files)
    make_out_dir(out_dir)
    names = plan_names(files, align=detect)
    for path in files:
        try:
            img = load_rgb(path)
            if detect:
                outputs = [(f"{names[path]}_face{k}", hr, lr)
                           for k, (_, hr, lr) in enumerate(A.align_all(img, template, size, lr_size))]
            else:
                hr, lr = A.frame_only(img, size, lr_size)
                outputs = [(names[path], hr, lr)]
        except FaceDetectorUnavailable:
            raise
        except PulseError as exc:
            log.info("%s", exc)
            summary.errors.append({"input": str(path), "error": str(exc)})
            continue
        if not outputs:
            log.info("%s: no face found", path)
            summary.no_face.append(str(path))
            continue
        written: List[str] = []
        try:
            for stem, hr, lr in outputs:
                save_image(hr, out_dir / f"{stem}.png")  # atomic: never a truncated file
                save_image(lr, out_dir / f"{stem}_lr.png")
                written.append(f"{stem}.png")
        except OSError as exc:
            log.error("%s: cannot write to %s (%s)", path, out_dir, exc.strerror or exc)
            summary.errors.append({"input": str(path), "error": f"cannot write: {exc.strerror or exc}"})
            if exc.errno in FATAL_WRITE_ERRORS:
                summary.stopped = f"{out_dir} is not writable ({exc.strerror or exc})"
                log.error("%s; stopped before the remaining photos", summary.stopped)
                break
            continue
        if on_written is not None:
            on_written(path, written)
        summary.written.append({"input": str(path), "outputs": written})


def resolve_crop(model_name: Optional[str], template: Optional[str], size: Optional[int],
                 lr_size: Optional[int], detect: bool):
    """The (template, size, lr_size) an alignment uses, from the options of ``pulse align``.

    An explicit ``template`` (a JSON file or ``"ffhq"``) replaces the model's;
    otherwise the model is inspected for its crop convention and resolution
    (:func:`pulse_sr.model.inspect_model`: from its file's header or the registry,
    with no Gaussian fit computed; not needed when ``detect`` is off and ``size`` is given).
    """
    from .. import align as A

    if template is not None:
        tmpl = A.load_template(template)
        size = size or (1024 if tmpl == A.FFHQ else int(tmpl["size"]))
    else:
        tmpl = None
        if detect or not size:
            from ..model import inspect_model
            info = inspect_model(model_name)
            size = size or info.resolution
            if detect:
                tmpl = A.template_for(info)
    lr_size = lr_size or A.default_lr_size(size)
    if size % lr_size:
        raise A.TemplateError(f"--lr-size {lr_size} does not divide the crop size {size}; "
                              f"use a divisor of {size}, e.g. {A.default_lr_size(size)}")
    return tmpl, size, lr_size
