"""`pulse train`: train a StyleGAN v1 generator (the bundled model's recipe)."""

from __future__ import annotations

import click

from ..train.loop import TrainOptions
from .common import StepBars, dataclass_options


@click.command("train")
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="Folder for checkpoints, sample grids and the model.")
@dataclass_options(TrainOptions, exclude=("data", "out"))
def train(data, out, **kwargs):
    """Train a generator on DATA (a folder of aligned face crops, or a .npz pack).

    Resumes from OUT/checkpoint.pt when present. Writes OUT/samples_*.png
    periodically and OUT/generator.safetensors (the EMA generator) at the end.
    The bundled model was trained this way on UTKFace (non-commercial research use only).
    """
    from ..train.loop import train as run

    with StepBars() as bars:
        run(TrainOptions(data=data, out=out, **kwargs),
            progress=lambda done, total: bars("loading images", done, total, {}))
