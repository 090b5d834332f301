"""`pulse align`: detect and align the faces of ordinary photos into a model's frame."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK, echo_err, load_model_or_exit


@click.command("align")
@click.argument("photos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the aligned crops.")
@click.option("--model", default="default", show_default=True,
              help="Registry name or weights path whose crop convention and resolution to use.")
@click.option("--template", default=None,
              help="Crop template JSON file ({left_eye: [x, y], ..., size: R}) or 'ffhq'; replaces --model.")
@click.option("--size", type=click.IntRange(1), default=None, help="HR crop size [default: the model's resolution].")
@click.option("--lr-size", type=click.IntRange(1), default=None,
              help="LR size, exact bicubic downscale of the crop [default: 8, or 16 for 1024-px models].")
@click.option("--no-detect", is_flag=True,
              help="Inputs are already framed faces (possibly tiny): only resize them.")
def align(photos, out_dir, model, template, size, lr_size, no_detect):
    """Write <stem>_face<k>.png (aligned HR crop, largest face first) and <stem>_face<k>_lr.png
    for every face in each PHOTO; with --no-detect, <stem>.png and <stem>_lr.png."""
    from .. import align as A
    from ..errors import PulseError

    if template is not None:
        try:
            template = A.load_template(template)
        except PulseError as exc:
            raise click.UsageError(str(exc))
        if size is None:
            size = 1024 if template == A.FFHQ else int(template["size"])
    elif not (no_detect and size):
        G = load_model_or_exit(model)
        size = size or int(G.resolution)
        if not no_detect:
            try:
                template = A.template_for(G)
            except PulseError as exc:
                raise click.UsageError(str(exc))
    lr_size = lr_size or A.default_lr_size(size)
    if size % lr_size:
        raise click.UsageError(f"--lr-size {lr_size} does not divide the crop size {size}; "
                               f"use a divisor of {size}, e.g. {A.default_lr_size(size)}")

    out_dir.mkdir(parents=True, exist_ok=True)
    unreadable = no_face = False
    for path in photos:
        try:
            img = A.load_image(path)
            if no_detect:
                hr, lr = A.frame_only(img, size, lr_size)
                outputs = [(path.stem, hr, lr)]
            else:
                outputs = [(f"{path.stem}_face{k}", hr, lr)
                           for k, (_, hr, lr) in enumerate(A.align_all(img, template, size, lr_size))]
        except A.FaceDetectorUnavailable as exc:
            echo_err(f"error: {exc}")
            sys.exit(EXIT_BAD_INPUT)
        except PulseError as exc:
            echo_err(str(exc))
            unreadable = True
            continue
        if not outputs:
            echo_err(f"{path}: no face found")
            no_face = True
            continue
        written = []
        for stem, hr, lr in outputs:
            hr.save(out_dir / f"{stem}.png")
            lr.save(out_dir / f"{stem}_lr.png")
            written.append(f"{stem}.png")
        click.echo(f"{path}: {', '.join(written)} ({size}px, LR {lr_size}px)")
    sys.exit(EXIT_BAD_INPUT if unreadable else EXIT_NOT_FOUND if no_face else EXIT_OK)
