"""`pulse train`: train a StyleGAN v1 generator (the bundled model's recipe)."""

from __future__ import annotations

import dataclasses

import click

from ..train.loop import TrainOptions


def _options(fn):
    # One click option per TrainOptions field, so the CLI and the library never drift apart.
    for f in reversed(dataclasses.fields(TrainOptions)):
        if f.name in ("data", "out"):
            continue
        typ = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
        name = "--" + f.name.replace("_", "-")
        if typ is bool:
            fn = click.option(f"{name}/--no-{f.name.replace('_', '-')}", default=f.default, show_default=True)(fn)
        else:
            fn = click.option(name, type=typ, default=f.default, show_default=True)(fn)
    return fn


@click.command("train")
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="Folder for checkpoints, sample grids and the model.")
@_options
def train(data, out, **kwargs):
    """Train a generator on DATA (a folder of aligned face crops, or a .npz pack).

    Resumes from OUT/checkpoint.pt when present. Writes OUT/samples_*.png
    periodically and OUT/generator.safetensors (the EMA generator) at the end.
    The bundled model was trained this way on UTKFace (non-commercial research use only).
    """
    from ..train.loop import train as run

    run(TrainOptions(data=data, out=out, **kwargs), log=lambda s: click.echo(s, err=True))
