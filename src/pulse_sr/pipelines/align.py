"""``pulse align`` as library code: detect and align the faces of photos (files or folders) into a model's frame.

For every face: ``<stem>_face<k>.png`` (the aligned HR crop, largest face first)
and ``<stem>_face<k>_lr.png`` (its exact bicubic downscale); with ``detect=False``,
``<stem>.png`` and ``<stem>_lr.png`` for inputs that are already framed faces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from ..errors import EXIT_ERROR, PulseError, exit_code
from ..images import expand_inputs, load_rgb, save_image
from .upsample import _FATAL_WRITE_ERRORS, OutputFolderError, check_out_dir, plan_names


def align_files(inputs, out_dir, template, size: int, lr_size: int, *, detect: bool = True,
                log: Callable[[str], None] = print,
                on_written: Optional[Callable[[Path, List[str]], None]] = None) -> dict:
    """Align every photo in ``inputs`` (files, or folders of images) and write the crops to ``out_dir``.

    ``template`` is a crop template or ``"ffhq"`` (ignored with ``detect=False``).
    Inputs get unique names as in ``pulse upsample``; ``out_dir`` may not hold inputs,
    and images are written atomically. Problems go to ``log``; ``on_written(photo, [file names])`` follows each photo done.
    Returns ``{"written": [{"input", "outputs"}], "errors": [...], "no_face": [...], "exit_code"}``.
    Raises :class:`pulse_sr.align.FaceDetectorUnavailable` when dlib is missing.
    """
    from .. import align as A

    out_dir = Path(out_dir)
    notes: List[str] = []
    files = expand_inputs(inputs, notes)
    for line in notes:
        log(line)
    check_out_dir(out_dir, files)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"cannot create {out_dir} ({exc.strerror or exc})") from None
    names = plan_names(files, align=detect)
    summary = {"written": [], "errors": [], "no_face": []}
    for path in files:
        notes.clear()
        try:
            img = load_rgb(path, notes)
            if detect:
                outputs = [(f"{names[path]}_face{k}", hr, lr)
                           for k, (_, hr, lr) in enumerate(A.align_all(img, template, size, lr_size))]
            else:
                hr, lr = A.frame_only(img, size, lr_size)
                outputs = [(names[path], hr, lr)]
        except A.FaceDetectorUnavailable:
            raise
        except PulseError as exc:
            log(str(exc))
            summary["errors"].append({"input": str(path), "error": str(exc)})
            continue
        finally:
            for line in notes:
                log(line)
        if not outputs:
            log(f"{path}: no face found")
            summary["no_face"].append(str(path))
            continue
        written: List[str] = []
        try:
            for stem, hr, lr in outputs:
                save_image(hr, out_dir / f"{stem}.png")  # atomic: never a truncated file
                save_image(lr, out_dir / f"{stem}_lr.png")
                written.append(f"{stem}.png")
        except OSError as exc:
            log(f"error: {path}: cannot write to {out_dir} ({exc.strerror or exc})")
            summary["errors"].append({"input": str(path), "error": f"cannot write: {exc.strerror or exc}"})
            if exc.errno in _FATAL_WRITE_ERRORS:
                summary["stopped"] = f"{out_dir} is not writable ({exc.strerror or exc})"
                log(f"error: {summary['stopped']}; stopped before the remaining photos")
                break
            continue
        if on_written is not None:
            on_written(path, written)
        summary["written"].append({"input": str(path), "outputs": written})
    summary["exit_code"] = EXIT_ERROR if "stopped" in summary else exit_code(
        bad_input=bool(summary["errors"]), not_found=bool(summary["no_face"]))
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
