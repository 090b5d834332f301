"""``pulse align`` as library code: detect and align the faces of photos (files or folders) into a model's frame.

For every face: ``<stem>_face<k>.png`` (the aligned HR crop, largest face first)
and ``<stem>_face<k>_lr.png`` (its exact bicubic downscale); with ``detect=False``,
``<stem>.png`` and ``<stem>_lr.png`` for inputs that are already framed faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from ..errors import PulseError, exit_code
from ..images import expand_inputs


def align_files(inputs, out_dir, template, size: int, lr_size: int, *, detect: bool = True,
                log: Callable[[str], None] = print,
                on_written: Optional[Callable[[Path, List[str]], None]] = None) -> dict:
    """Align every photo in ``inputs`` (files, or folders of images) and write the crops to ``out_dir``.

    ``template`` is a crop template or ``"ffhq"`` (ignored with ``detect=False``).
    Problems go to ``log``; ``on_written(photo, [file names])`` follows each photo done.
    Returns ``{"written": [{"input", "outputs"}], "errors": [...], "no_face": [...], "exit_code"}``.
    Raises :class:`pulse_sr.align.FaceDetectorUnavailable` when dlib is missing.
    """
    from .. import align as A

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"written": [], "errors": [], "no_face": []}
    for path in expand_inputs(inputs):
        try:
            img = A.load_image(path)
            if detect:
                outputs = [(f"{path.stem}_face{k}", hr, lr)
                           for k, (_, hr, lr) in enumerate(A.align_all(img, template, size, lr_size))]
            else:
                hr, lr = A.frame_only(img, size, lr_size)
                outputs = [(path.stem, hr, lr)]
        except A.FaceDetectorUnavailable:
            raise
        except PulseError as exc:
            log(str(exc))
            summary["errors"].append({"input": str(path), "error": str(exc)})
            continue
        if not outputs:
            log(f"{path}: no face found")
            summary["no_face"].append(str(path))
            continue
        written: List[str] = []
        for stem, hr, lr in outputs:
            hr.save(out_dir / f"{stem}.png")
            lr.save(out_dir / f"{stem}_lr.png")
            written.append(f"{stem}.png")
        if on_written is not None:
            on_written(path, written)
        summary["written"].append({"input": str(path), "outputs": written})
    summary["exit_code"] = exit_code(bad_input=bool(summary["errors"]), not_found=bool(summary["no_face"]))
    return summary


def resolve_crop(model_name: Optional[str], template: Optional[str], size: Optional[int],
                 lr_size: Optional[int], detect: bool):
    """The (template, size, lr_size) an alignment uses, from the options of ``pulse align``.

    An explicit ``template`` (a JSON file or ``"ffhq"``) replaces the model's;
    otherwise the model is loaded for its crop convention and resolution (not
    needed when ``detect`` is off and ``size`` is given).
    """
    from .. import align as A

    if template is not None:
        tmpl = A.load_template(template)
        size = size or (1024 if tmpl == A.FFHQ else int(tmpl["size"]))
    else:
        tmpl = None
        if detect or not size:
            from ..model import load_model
            model = load_model(model_name)
            size = size or model.resolution
            if detect:
                tmpl = A.template_for(model)
    lr_size = lr_size or A.default_lr_size(size)
    if size % lr_size:
        raise A.TemplateError(f"--lr-size {lr_size} does not divide the crop size {size}; "
                              f"use a divisor of {size}, e.g. {A.default_lr_size(size)}")
    return tmpl, size, lr_size
