"""`pulse align`: detect and align the faces of ordinary photos into a model's frame."""

from __future__ import annotations

import sys
from pathlib import Path

import click



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
    for every face in each PHOTO (a file, or a folder of images); with --no-detect,
    <stem>.png and <stem>_lr.png.

    Exit codes: 0 done, 3 some photo had no face, 2 bad usage or input, 1 other errors.
    """
    from ..errors import TemplateError
    from ..pipelines.align import align_files, resolve_crop

    try:
        tmpl, size, lr_size = resolve_crop(model, template, size, lr_size, detect=not no_detect)
    except TemplateError as exc:
        raise click.UsageError(str(exc))
    summary = align_files(photos, out_dir, tmpl, size, lr_size, detect=not no_detect,
                          on_written=lambda path, names: click.echo(
                              f"{path}: {', '.join(names)} ({size}px, LR {lr_size}px)"))
    sys.exit(summary.exit_code)

