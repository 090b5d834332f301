"""`pulse quality`: FD-dlib (a face-specific Fréchet distance), precision and recall against real crops."""

from __future__ import annotations

from pathlib import Path

import click

from .common import StepBars, load_model


@click.command("quality")
@click.argument("real_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", default=None, help="Registry name or weights path whose samples to measure [default: default].")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Measure a folder of images instead of a model (e.g. real train crops, for the floor).")
@click.option("--resolution", type=click.IntRange(8, 1024), default=None,
              help="With --images: the size both sets are resized to [default: 64].")
@click.option("--n", default=5000, show_default=True, type=click.IntRange(2, 100_000),
              help="Generated samples (or images taken from --images).")
@click.option("--real-n", type=click.IntRange(2), default=None, help="Use a seeded sample of the real crops [default: all].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--bootstrap", default=200, show_default=True, type=click.IntRange(0, 10_000),
              help="Bootstrap resamples for the 95 % interval of FD-dlib.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the result as JSON.")
def quality(real_dir, model, images_dir, resolution, n, real_n, seed, bootstrap, out):
    """FD-dlib of a model's samples (or of a folder of images) against the real crops in REAL_DIR.

    The Fréchet distance between dlib face-embedding Gaussians (lower is better),
    with a bootstrap 95 % interval, and k-NN precision and recall (Kynkäänniemi
    et al. 2019). Values compare only between sets measured the same way.
    """
    from ..pipelines.quality import QualityJob, measure_quality

    pulse_model = load_model(model or "default") if images_dir is None or model else None
    job = QualityJob(images_dir=images_dir, resolution=resolution, n=n, real_n=real_n, seed=seed,
                     bootstrap=bootstrap)
    with StepBars() as bars:
        r = measure_quality(real_dir, job, model=pulse_model, out=out,
                            progress=lambda what, d, t: bars(f"embedding {what}", d, t, {}))
    q = r.report
    ci = f" (95% CI {q.fd_ci95[0]:.4f}-{q.fd_ci95[1]:.4f})" if q.fd_ci95 else ""
    click.echo(f"FD-dlib {q.fd:.4f}{ci}, precision {q.precision:.3f}, "
               f"recall {q.recall:.3f}; {r.generated} vs {q.n_real} real crops")
